"""The live view (`dmabuf-top`): a pure model of rows and rates, a pure screen renderer, a curses loop.

analysis/ never imports this package: offline reports work from sessions alone.
"""
