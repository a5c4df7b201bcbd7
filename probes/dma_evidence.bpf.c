// SPDX-License-Identifier: GPL-2.0
/*
 * Positive DMA evidence: which page frames the storage device wrote into (reads), and how many bytes.
 *
 * A bio is tagged with its submitter's tgid where it enters the block layer (block_bio_queue, and
 * block_split for the piece a split makes), because that runs in the submitter's context even when
 * the request is later issued by a plug flush, a kworker or an io_uring worker. When a read request
 * completes (block_rq_complete: blk_update_request and the batched blk_complete_request, before
 * either advances or ends a bio), its bios are walked through their bvec_iter, page by page, and
 * the bytes are added per page frame. See docs/dma-evidence.md for the choices and their costs.
 *
 * Every program has a tp_btf and a raw_tp form (same code, BPF_CORE_READ throughout);
 * dma_evidence.py loads one set.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "dma_evidence.h"
#include "core_defs.h"
#include "syscall_path.h" /* syscall_nr, syscall_arg, file_of_fd; bpf_rdonly_cast (6.2+, as iopaths needs) */

char LICENSE[] SEC("license") = "GPL";

/* include/linux/blk_types.h: the operation is the low REQ_OP_BITS (8) of bi_opf / cmd_flags; READ is 0. */
#define OP_MASK 0xffu
#define OP_READ 0u

/* Record every read, whoever queued it (a validate run that owns the machine); else only traced_tgids'. */
const volatile bool record_all = false;

/* x86_64 with CONFIG_RANDOMIZE_MEMORY (or 5-level paging): vmemmap's start is this variable. */
extern const void vmemmap_base __ksym __weak;
/* arm64: the physical address of PAGE_OFFSET, which offsets vmemmap (asm/pgtable.h). */
extern const void memstart_addr __ksym __weak;
#define HUGETLBFS_MAGIC_ 0x958458f6 /* include/uapi/linux/magic.h */


/* arm64: CONFIG_ARM64_VA_BITS, set by user space from the kernel's config (0: not known, frames unknown). */
const volatile __u32 arm64_va_bits = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18); /* 1 GiB of 4 KiB pages; user space may change it before load */
	__type(key, __u64);
	__type(value, __u64);
} device_writes SEC(".maps");

/* The same bytes as device_writes, for pages that belong to a file (a memfd, a file's page cache), by place. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18); /* user space sizes it as device_writes */
	__type(key, struct dma_evidence_file_page);
	__type(value, struct dma_evidence_file_write);
} file_writes SEC(".maps");

/*
 * Files the device wrote pages of -> pages that left the file since (a hole punched, a truncation), whose places
 * file_writes then forgets: a place whose page left may hold another page now, filled by anyone. With
 * DMA_EVIDENCE_PLACES_UNKNOWN set, a folio of unknown size left, so no place of the file can be trusted. Pages
 * that move (migration, collapse, swap) stay in the file and are not counted here.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18); /* user space sizes it as device_writes: a file per page at most */
	__uint(map_flags, BPF_F_NO_PREALLOC); /* as many files as pages is room for a cold `import` of a runtime */
	__type(key, struct dma_evidence_file);
	__type(value, __u64);
} written_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct dma_evidence_tgid);
} tgid_writes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} traced_tgids SEC(".maps");

/*
 * Bios in flight -> submitter. LRU: a bio that never completes through a request (a bio-based
 * driver's, or one failed before it became a request) must not fill the map for good; an evicted
 * tag only makes its bytes "untraced", which is counted.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} bio_owner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dma_evidence_stats);
} stats SEC(".maps");

static __always_inline struct dma_evidence_stats *stats_slot(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&stats, &zero);
}

/* ---- tagging bios with their submitter */

static __always_inline int tag_bio(struct bio *bio)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 key = (__u64)bio;
	struct dma_evidence_stats *s;

	if ((BPF_CORE_READ(bio, bi_opf) & OP_MASK) != OP_READ)
		return 0;
	if (!record_all && !bpf_map_lookup_elem(&traced_tgids, &tgid))
		return 0;
	bpf_map_update_elem(&bio_owner, &key, &tgid, BPF_ANY);
	s = stats_slot();
	if (s)
		s->bios_tagged++;
	return 0;
}

SEC("tp_btf/block_bio_queue")
int BPF_PROG(bio_queue_btf, struct bio *bio)
{
	return tag_bio(bio);
}

SEC("raw_tp/block_bio_queue")
int BPF_PROG(bio_queue_raw, struct bio *bio)
{
	return tag_bio(bio);
}

/* bio_submit_split_bioset: `split` is a new bio (the front part) that block_bio_queue never sees. */
SEC("tp_btf/block_split")
int BPF_PROG(bio_split_btf, struct bio *split, unsigned int new_sector)
{
	return tag_bio(split);
}

SEC("raw_tp/block_split")
int BPF_PROG(bio_split_raw, struct bio *split, unsigned int new_sector)
{
	return tag_bio(split);
}

/* ---- the completion walk */

struct walk {
	__u64 bio;		/* the bio being walked; 0 before the first */
	__u64 next_bio;		/* where the walk goes when this bio is done */
	__u64 vecs;		/* its bi_io_vec */
	__u64 vmemmap;
	__u64 page_size;	/* sizeof(struct page) */
	__u64 recorded;
	__u64 untraced;
	__u64 map_full;
	__u32 rq_left;		/* bytes of this completion not yet walked */
	__u32 bio_left;		/* bytes of this bio not yet walked (within rq_left) */
	__u32 idx;		/* bvec index, from bi_iter.bi_idx */
	__u32 done;		/* bytes of bvec[idx] already done, from bi_iter.bi_bvec_done */
	__u32 traced;		/* this bio's bytes go to device_writes */
	__u32 tgid_full;
	__u32 started;
	__u32 finished;		/* the walk reached the end of the bios (else: the step bound) */
	__u32 unplaced;		/* bytes the request claims that no bio vector holds */
	__u32 file_places;	/* this kernel's struct page lets the walk name a file's pages by place */
	__u64 headless;		/* bytes in pages whose folio head was not found */
	__u64 last_mapping;	/* the mapping of the last file page walked, and its file: a request's pages are */
	struct dma_evidence_file last_file; /* mostly one file's, so the file is named once per run of them */
};

/*
 * The walk's state lives in a map, not on the stack: the verifier checks a bpf_loop callback until
 * its states converge, and precise stack values that change every step never do (E2BIG).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk);
} walk_state SEC(".maps");

/* Adds bytes to a frame's count in device_writes; 0, or -1 when the map is full. */
static __always_inline int record_frame(__u64 pfn, __u64 bytes)
{
	__u64 *value = bpf_map_lookup_elem(&device_writes, &pfn);

	if (!value && bpf_map_update_elem(&device_writes, &pfn, &bytes, BPF_NOEXIST) == 0)
		return 0;
	if (!value)
		value = bpf_map_lookup_elem(&device_writes, &pfn); /* another CPU made it meanwhile */
	if (!value)
		return -1;
	__sync_fetch_and_add(value, bytes);
	return 0;
}

static __always_inline void add_page(struct walk *w, __u64 pfn, __u64 bytes)
{
	if (record_frame(pfn, bytes))
		w->map_full += bytes;
	else
		w->recorded += bytes;
}

/* The file and its super_block's dev of a page-cache mapping; 0 when `mapping` is none (anonymous memory, a
 * driver's own pages: the low bits PAGE_MAPPING_ANON / MOVABLE / KSM mark the others). */
static __always_inline int mapping_file(__u64 mapping, struct dma_evidence_file *file)
{
	struct inode *host;

	if (!mapping || (mapping & 3))
		return 0;
	host = ((struct address_space *)bpf_rdonly_cast((void *)mapping, bpf_core_type_id_kernel(struct address_space)))
		       ->host;
	/* A page whose word there is something else (a slab page, a driver's page_pool page) names no file whose
	 * mapping points back at it. hugetlbfs pages are named by frame: before 6.7 a hugetlb folio's index counted
	 * huge pages, not pages. */
	if (!host || (__u64)host->i_mapping != mapping || host->i_sb->s_magic == HUGETLBFS_MAGIC_)
		return 0;
	file->ino = host->i_ino;
	file->dev = host->i_sb->s_dev;
	return 1;
}

/* A tail page's link to its head: compound_head before 7.0, compound_info since (include/linux/mm_types.h). */
struct page___compound_head {
	unsigned long compound_head;
} __attribute__((preserve_access_index));

struct page___compound_info {
	unsigned long compound_info;
} __attribute__((preserve_access_index));

/* Whether this kernel's struct page has either (a CO-RE constant: the reads below are removed where it has not). */
#define PAGE_HEAD_KNOWN                                                                 \
	(bpf_core_field_exists(((struct page___compound_info *)0)->compound_info) ||   \
	 bpf_core_field_exists(((struct page___compound_head *)0)->compound_head))

/* How far a head can be from its tail: a 1 GiB folio's pages. */
#define MAX_FOLIO_SPAN_PAGES (1ULL << 18)

/*
 * A word of kernel memory as a number, by a plain load: through a read-only view as a struct timespec64, whose
 * first field is a 64-bit integer. The verifier types a load from a pointer field (the head link shares its word
 * with lru.next, a folio's mapping is a pointer) as a pointer, whose bits cannot be tested; a helper read costs
 * a call per page.
 */
static __always_inline __u64 kernel_word(__u64 address)
{
	return ((struct timespec64 *)bpf_rdonly_cast((void *)address, bpf_core_type_id_kernel(struct timespec64)))
		->tv_sec;
}

static __always_inline int head_is_near(__u64 head, __u64 page, __u64 page_size)
{
	return head <= page && page - head < MAX_FOLIO_SPAN_PAGES * page_size;
}

/*
 * The head page of `page`'s folio (include/linux/page-flags.h _compound_head); 0 when not known. Bit 0 of the
 * link marks a tail. The rest is the head's address, or since 7.0, with a power-of-2 struct page and the
 * hugetlb vmemmap optimisation (compound_info_has_mask()), a mask that takes the tail's address to its head's.
 * Which of the two is a kernel config fact; the one that lands on a head near the page is the one.
 */
static __always_inline __u64 page_head(__u64 page, __u64 page_size)
{
	__u64 link = 0;

	if (bpf_core_field_exists(((struct page___compound_info *)0)->compound_info))
		link = kernel_word(page + bpf_core_field_offset(struct page___compound_info, compound_info));
	else if (bpf_core_field_exists(((struct page___compound_head *)0)->compound_head))
		link = kernel_word(page + bpf_core_field_offset(struct page___compound_head, compound_head));
	else
		return 0;
	if (!(link & 1))
		return page;
	if (head_is_near(link - 1, page, page_size))
		return link - 1;
	if (head_is_near(page & link, page, page_size))
		return page & link;
	return 0;
}

/* What page_in_file found: a page of a file, a page of none (named by its frame), or a page whose folio is not found. */
#define PAGE_IN_FILE 1
#define PAGE_OF_NO_FILE 0
#define PAGE_HEADLESS -1

/*
 * Where `page` sits in a file, by the one rule both sides use (the completion walk for what the device wrote, the
 * exporter walk for a udmabuf's pages): its folio's mapping word (the file is named from it by mapping_file) and
 * its offset in the file, the folio's index plus the page's rank in the folio. Three plain loads: the head link,
 * the mapping, the index.
 */
static __always_inline int page_in_file(__u64 page, __u64 page_size, __u64 *mapping, __u64 *index)
{
	__u64 head = page_head(page, page_size);
	struct folio *folio;

	if (!head)
		return PAGE_HEADLESS;
	*mapping = kernel_word(head + bpf_core_field_offset(struct folio, mapping));
	if (!*mapping || (*mapping & 3))
		return PAGE_OF_NO_FILE; /* anonymous memory (PAGE_MAPPING_ANON / MOVABLE / KSM) or a driver's own page */
	folio = bpf_rdonly_cast((void *)head, bpf_core_type_id_kernel(struct folio));
	*index = folio->index + (page - head) / page_size;
	return PAGE_IN_FILE;
}

/*
 * Records a chunk in file_writes when its page belongs to a file (1; else 0, and the caller records it by frame
 * alone): the page's folio gives the mapping, and the folio's index plus the page's place in the folio its offset.
 * A page is in one ledger, never both: its place's value keeps the frame written too. Per page: three plain
 * loads (the head link, the mapping, the index) and the map update; the file is named once per mapping.
 */
static __always_inline int add_file_page(struct walk *w, __u64 page, __u64 pfn, __u64 bytes)
{
	struct dma_evidence_file_page key = {};
	struct dma_evidence_file_write fresh = { .bytes = bytes, .pfn = pfn };
	struct dma_evidence_file_write *value;
	__u64 mapping = 0, index = 0, zero = 0;
	int found;

	if (!w->file_places) /* user space matches memfds by their frames on such a kernel */
		return 0;
	found = page_in_file(page, w->page_size, &mapping, &index);
	if (found == PAGE_HEADLESS) { /* if it was a memfd's page, its place is not known: said as lost, never dropped */
		w->headless += bytes;
		return 0;
	}
	if (found != PAGE_IN_FILE)
		return 0;
	if (mapping != w->last_mapping) {
		if (!mapping_file(mapping, &w->last_file)) {
			w->last_mapping = 0;
			return 0;
		}
		/* A file written_files cannot hold would have its pages' leaving unseen: its bytes are lost, said so. */
		if (bpf_map_update_elem(&written_files, &w->last_file, &zero, BPF_NOEXIST) &&
		    !bpf_map_lookup_elem(&written_files, &w->last_file)) {
			w->last_mapping = 0;
			w->map_full += bytes;
			return 1;
		}
		w->last_mapping = mapping;
	}
	key.ino = w->last_file.ino;
	key.dev = w->last_file.dev;
	key.index = index;
	value = bpf_map_lookup_elem(&file_writes, &key);
	if (!value && bpf_map_update_elem(&file_writes, &key, &fresh, BPF_NOEXIST) == 0)
		goto recorded;
	if (!value)
		value = bpf_map_lookup_elem(&file_writes, &key); /* another CPU made it meanwhile */
	if (!value) { /* this page has no place in the map: its bytes are lost, and said so */
		w->map_full += bytes;
		return 1;
	}
	__sync_fetch_and_add(&value->bytes, bytes);
	value->pfn = pfn;
recorded:
	w->recorded += bytes;
	return 1;
}

static __always_inline void credit_tgid(struct walk *w, __u32 tgid, __u64 bytes)
{
	struct dma_evidence_tgid fresh = { .bytes = bytes, .bios = 1 };
	struct dma_evidence_tgid *entry = bpf_map_lookup_elem(&tgid_writes, &tgid);

	if (entry) {
		__sync_fetch_and_add(&entry->bytes, bytes);
		__sync_fetch_and_add(&entry->bios, 1);
		return;
	}
	if (bpf_map_update_elem(&tgid_writes, &tgid, &fresh, BPF_NOEXIST) == 0)
		return;
	entry = bpf_map_lookup_elem(&tgid_writes, &tgid);
	if (entry) {
		__sync_fetch_and_add(&entry->bytes, bytes);
		__sync_fetch_and_add(&entry->bios, 1);
	} else {
		w->tgid_full++;
	}
}

/* Move to w->next_bio: load its iterator and decide whether its bytes are traced. 1 ends the walk. */
static __always_inline int enter_bio(struct walk *w)
{
	struct bio *bio = (struct bio *)w->next_bio;
	__u64 key = w->next_bio;
	__u32 size, *owner;
	__u32 tgid = 0;

	if (!bio || !w->rq_left) {
		w->finished = 1;
		return 1;
	}
	w->bio = w->next_bio;
	w->next_bio = (__u64)BPF_CORE_READ(bio, bi_next);
	w->vecs = (__u64)BPF_CORE_READ(bio, bi_io_vec);
	w->idx = BPF_CORE_READ(bio, bi_iter.bi_idx);
	w->done = BPF_CORE_READ(bio, bi_iter.bi_bvec_done);
	size = BPF_CORE_READ(bio, bi_iter.bi_size);
	w->bio_left = size < w->rq_left ? size : w->rq_left;

	owner = bpf_map_lookup_elem(&bio_owner, &key);
	if (owner)
		tgid = *owner;
	w->traced = owner || record_all;
	if (w->traced) {
		credit_tgid(w, tgid, w->bio_left);
	} else { /* not ours: counted in one step, its pages not walked */
		w->untraced += w->bio_left;
		w->rq_left -= w->bio_left;
		w->bio_left = 0;
	}
	/* Completed in full here: the bio ends after this tracepoint, and its address may be reused. */
	if (owner && w->bio_left == size)
		bpf_map_delete_elem(&bio_owner, &key);
	return 0;
}

static long walk_step(__u32 index, void *ctx)
{
	__u32 zero = 0;
	struct walk *w = bpf_map_lookup_elem(&walk_state, &zero);
	struct bio_vec vec = {};
	__u64 offset, chunk, in_page, page, pfn;

	if (!w)
		return 1;
	/*
	 * bi_iter alone says what a bio covers (bvec_iter_bvec): a clone made by bio_split shares the
	 * parent's bi_io_vec and has bi_vcnt 0, so bi_vcnt is not a bound.
	 */
	if (!w->started || !w->bio_left) {
		w->started = 1;
		return enter_bio(w);
	}
	if (bpf_probe_read_kernel(&vec, sizeof(vec), (void *)(w->vecs + (__u64)w->idx * sizeof(vec)))) {
		w->unplaced += w->bio_left; /* an unreadable vector: the rest of this bio cannot be placed */
		w->rq_left -= w->bio_left;
		w->bio_left = 0;
		return 0;
	}
	if (w->done >= vec.bv_len) { /* an empty vector: next */
		w->idx++;
		w->done = 0;
		return 0;
	}
	/* A bvec may span several pages (multi-page bvecs, 5.1+): split it at page boundaries. */
	offset = (__u64)vec.bv_offset + w->done;
	in_page = offset & (DMA_EVIDENCE_PAGE_SIZE - 1);
	chunk = DMA_EVIDENCE_PAGE_SIZE - in_page;
	if (chunk > vec.bv_len - w->done)
		chunk = vec.bv_len - w->done;
	if (chunk > w->bio_left)
		chunk = w->bio_left;
	page = (__u64)vec.bv_page + (offset >> DMA_EVIDENCE_PAGE_SHIFT) * w->page_size;
	pfn = (page - w->vmemmap) / w->page_size;
	if (!add_file_page(w, page, pfn, chunk))
		add_page(w, pfn, chunk);
	w->done += chunk;
	w->bio_left -= chunk;
	w->rq_left -= chunk;
	if (w->done >= vec.bv_len) {
		w->idx++;
		w->done = 0;
	}
	return 0;
}

/* Where struct page of frame 0 would be: a page's frame is (page - vmemmap) / sizeof(struct page); 0 if not known. */
static __always_inline __u64 vmemmap_start(__u64 page_size)
{
#if defined(__TARGET_ARCH_arm64)
	/*
	 * arm64 (asm/memory.h, asm/pgtable.h, 6.x-7.x): vmemmap = VMEMMAP_START - (memstart_addr >> PAGE_SHIFT) pages,
	 * VMEMMAP_START = -1 GiB - VMEMMAP_SIZE, VMEMMAP_SIZE = the struct pages of the linear map from
	 * PAGE_OFFSET = -(1 << VA_BITS) to _PAGE_END(VA_BITS_MIN) = -(1 << (VA_BITS_MIN - 1)), VA_BITS_MIN =
	 * min(VA_BITS, 48) with 4 KiB pages (the only size this probe knows).
	 */
	__u64 va_bits = arm64_va_bits, va_min, linear;
	__s64 memstart = 0;

	if (va_bits < 36 || va_bits > 52 || !&memstart_addr ||
	    bpf_probe_read_kernel(&memstart, sizeof(memstart), &memstart_addr))
		return 0;
	va_min = va_bits > 48 ? 48 : va_bits;
	linear = (1ULL << va_bits) - (1ULL << (va_min - 1));
	/* memstart_addr is signed: a randomized linear map (KASLR) can move it below 0 */
	return -(1ULL << 30) - (linear >> DMA_EVIDENCE_PAGE_SHIFT) * page_size -
	       (__u64)((memstart >> DMA_EVIDENCE_PAGE_SHIFT) * (__s64)page_size);
#else
	__u64 base = DMA_EVIDENCE_VMEMMAP_L4;

	if (&vmemmap_base)
		bpf_probe_read_kernel(&base, sizeof(base), &vmemmap_base);
	return base;
#endif
}

static __always_inline int read_completed(struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	struct dma_evidence_stats *s;
	struct walk *w;
	__u32 zero = 0;

	if ((BPF_CORE_READ(rq, cmd_flags) & OP_MASK) != OP_READ || !nr_bytes)
		return 0;
	s = stats_slot();
	if (!s)
		return 0;
	s->read_requests++;
	s->read_bytes += nr_bytes;
	if (error) {
		s->error_bytes += nr_bytes;
		return 0;
	}
	w = bpf_map_lookup_elem(&walk_state, &zero);
	if (!w)
		return 0;
	__builtin_memset(w, 0, sizeof(*w));
	w->next_bio = (__u64)BPF_CORE_READ(rq, bio);
	if (!w->next_bio) {
		s->unplaced_bytes += nr_bytes;
		return 0;
	}
	w->rq_left = nr_bytes;
	w->page_size = bpf_core_type_size(struct page);
	w->vmemmap = vmemmap_start(w->page_size);
	w->file_places = PAGE_HEAD_KNOWN;
	if (!w->page_size || !w->vmemmap) { /* frames cannot be named (arm64 without its VA size): said, not lost */
		s->unplaced_bytes += nr_bytes;
		return 0;
	}
	bpf_loop(DMA_EVIDENCE_MAX_STEPS, walk_step, NULL, 0);
	/* What is left: past the step bound, or claimed by the request beyond its bios. */
	if (w->finished)
		w->unplaced += w->rq_left;
	else
		s->loop_bound_bytes += w->rq_left;
	s->unplaced_bytes += w->unplaced;
	s->recorded_bytes += w->recorded;
	s->untraced_bytes += w->untraced;
	s->map_full_bytes += w->map_full;
	s->tgid_map_full += w->tgid_full;
	s->vmemmap_base = w->vmemmap;
	s->page_struct_size = w->page_size;
	s->file_places = w->file_places;
	s->headless_bytes += w->headless;
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(rq_complete_btf, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	return read_completed(rq, error, nr_bytes);
}

SEC("raw_tp/block_rq_complete")
int BPF_PROG(rq_complete_raw, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	return read_completed(rq, error, nr_bytes);
}

/* ---- pages leaving a file the device wrote into (filemap.c __filemap_remove_folio: truncation, hole punching) */

/* Before 6.14 (or so) a large folio's size in pages was _folio_nr_pages. */
struct folio___nr_pages_old {
	unsigned int _folio_nr_pages;
} __attribute__((preserve_access_index));

/* The folio's pages (folio_nr_pages); 0 when this kernel's folio does not say. */
static __always_inline __u64 folio_pages(struct folio *folio)
{
	__u64 flags = 0;

	/* folio->flags is an unsigned long, or (6.18) a memdesc_flags_t holding one: the first word either way */
	if (bpf_core_read(&flags, sizeof(flags), &folio->flags))
		return 0;
	if (!(flags & (1ULL << bpf_core_enum_value(enum pageflags, PG_head))))
		return 1;
	if (bpf_core_field_exists(folio->_nr_pages))
		return BPF_CORE_READ(folio, _nr_pages);
	if (bpf_core_field_exists(((struct folio___nr_pages_old *)folio)->_folio_nr_pages))
		return BPF_CORE_READ((struct folio___nr_pages_old *)folio, _folio_nr_pages);
	return 0;
}

/*
 * A place whose page left: what the device wrote there is forgotten, its bytes counted in left_bytes (device
 * writes still, in no ledger). Not back under the frame written: a frame a page left is free, and a buffer that
 * gets it next (a udmabuf over the refilled memfd, a heap buffer) would be credited with a copy.
 */
static long forget_place(__u32 index, void *ctx)
{
	struct dma_evidence_file_page *place = ctx;
	struct dma_evidence_file_write *written = bpf_map_lookup_elem(&file_writes, place);
	struct dma_evidence_stats *s;

	if (written) {
		s = stats_slot();
		if (s)
			s->left_bytes += written->bytes;
		bpf_map_delete_elem(&file_writes, place);
	}
	place->index++;
	return 0;
}

/*
 * A folio leaves a file the device wrote pages of: its places forget what the device wrote there (a page a copy
 * fills later takes the same place), and the file counts the pages that left.
 */
static __always_inline int folio_removed(struct folio *folio)
{
	struct dma_evidence_file_page place = {};
	struct dma_evidence_file file = {};
	__u64 *left, pages;

	if (!mapping_file((__u64)BPF_CORE_READ(folio, mapping), &file))
		return 0;
	left = bpf_map_lookup_elem(&written_files, &file);
	if (!left)
		return 0;
	pages = folio_pages(folio);
	if (!pages || pages > DMA_EVIDENCE_MAX_FOLIO_PAGES) { /* which places left is not known: the file says so */
		__sync_fetch_and_or(left, DMA_EVIDENCE_PLACES_UNKNOWN);
		return 0;
	}
	place.ino = file.ino;
	place.dev = file.dev;
	place.index = BPF_CORE_READ(folio, index);
	bpf_loop(pages, forget_place, &place, 0);
	__sync_fetch_and_add(left, pages);
	return 0;
}

SEC("tp_btf/mm_filemap_delete_from_page_cache")
int BPF_PROG(page_removed_btf, struct folio *folio)
{
	return folio_removed(folio);
}

SEC("raw_tp/mm_filemap_delete_from_page_cache")
int BPF_PROG(page_removed_raw, struct folio *folio)
{
	return folio_removed(folio);
}

/*
 * ---- pages leaving a file where no page-cache removal shows it. __filemap_remove_folio does not run for a
 * swapped-out shmem page that a punch or truncation frees (shmem_undo_range -> shmem_free_swap), nor for a page
 * zeroed in place by a punch over part of it (truncate_inode_partial_folio), nor for a large folio that would not
 * split. The calls that remove pages are followed instead, at their exit, in any process, when the device wrote
 * the file: a punched or zeroed range (fallocate) loses its places page by page; ftruncate and open with O_TRUNC
 * make all of the file's places unknown; truncate(2) and madvise(MADV_REMOVE), which name no fd here, and
 * io_uring's fallocate and ftruncate are counted in unfollowed_removals: then no memfd is credited by place.
 */
#if defined(__TARGET_ARCH_x86)
#define EV_NR_madvise 28
#define EV_NR_open 2
#define EV_NR_truncate 76
#define EV_NR_ftruncate 77
#define EV_NR_creat 85
#define EV_NR_openat 257
#define EV_NR_fallocate 285
#define EV_NR_openat2 437
#elif defined(__TARGET_ARCH_arm64)
#define EV_NR_truncate 45
#define EV_NR_ftruncate 46
#define EV_NR_fallocate 47
#define EV_NR_openat 56
#define EV_NR_madvise 233
#define EV_NR_openat2 437
#define EV_NR_open -1 /* arm64 has openat only */
#define EV_NR_creat -2
#endif
#define O_TRUNC_ 01000	    /* include/uapi/asm-generic/fcntl.h */
#define FALLOC_FL_KEEP_SIZE_ 0x01 /* include/uapi/linux/falloc.h */
#define FALLOC_FL_PUNCH_HOLE_ 0x02
#define FALLOC_FL_ZERO_RANGE_ 0x10
#define MADV_REMOVE_ 9	    /* include/uapi/asm-generic/mman-common.h */
#define IORING_OP_FALLOCATE_ 17 /* include/uapi/linux/io_uring.h */
#define IORING_OP_FTRUNCATE_ 55

static __always_inline void removals_unfollowed(void)
{
	struct dma_evidence_stats *s = stats_slot();

	if (s)
		s->unfollowed_removals++;
}

/* The file open at `fd` in the current task, if the device wrote pages of it: its entry in written_files. */
static __always_inline __u64 *written_file_of_fd(__u64 fd, struct dma_evidence_file *file)
{
	struct file *open = file_of_fd(bpf_get_current_task_btf(), fd);
	__u64 mapping = 0;

	/* read as a number: its low bits are tested (a plain load would be a pointer to the verifier) */
	if (!open || bpf_probe_read_kernel(&mapping, sizeof(mapping), &open->f_mapping) || !mapping_file(mapping, file))
		return NULL;
	return bpf_map_lookup_elem(&written_files, file);
}

/* That file lost pages, which ones not known here (a truncation): none of its places is trusted. */
static __always_inline void file_cut(__u64 fd)
{
	struct dma_evidence_file file = {};
	__u64 *left = written_file_of_fd(fd, &file);

	if (left)
		__sync_fetch_and_or(left, DMA_EVIDENCE_PLACES_UNKNOWN);
}

/* The most pages one call's range is forgotten page by page (4 GiB); a larger range makes the file's places unknown. */
#define MAX_FORGOTTEN_RANGE (1U << 20)

/* That file's bytes [offset, offset + length) were punched or zeroed: every page they touch loses its place. */
static __always_inline void range_cut(__u64 fd, __u64 offset, __u64 length)
{
	struct dma_evidence_file_page place = {};
	struct dma_evidence_file file = {};
	__u64 *left = written_file_of_fd(fd, &file), pages;

	if (!left || !length)
		return;
	pages = ((offset + length - 1) >> DMA_EVIDENCE_PAGE_SHIFT) - (offset >> DMA_EVIDENCE_PAGE_SHIFT) + 1;
	if (pages > MAX_FORGOTTEN_RANGE) {
		__sync_fetch_and_or(left, DMA_EVIDENCE_PLACES_UNKNOWN);
		return;
	}
	place.ino = file.ino;
	place.dev = file.dev;
	place.index = offset >> DMA_EVIDENCE_PAGE_SHIFT;
	bpf_loop(pages, forget_place, &place, 0);
	__sync_fetch_and_add(left, pages);
}

static __always_inline int removal_call(struct pt_regs *regs, long ret)
{
	__s64 nr = syscall_nr(regs);
	__u64 flags;

	if (ret < 0)
		return 0;
	if (nr == EV_NR_fallocate) { /* (fd, mode, offset, len) */
		flags = syscall_arg(regs, 1);
		if (!(flags & ~FALLOC_FL_KEEP_SIZE_)) /* allocation: no page leaves */
			return 0;
		if (flags & ~(FALLOC_FL_KEEP_SIZE_ | FALLOC_FL_PUNCH_HOLE_ | FALLOC_FL_ZERO_RANGE_))
			file_cut(syscall_arg(regs, 0)); /* a range collapsed or inserted: every later page moved */
		else
			range_cut(syscall_arg(regs, 0), syscall_arg(regs, 2), syscall_arg(regs, 3));
	} else if (nr == EV_NR_ftruncate) {
		file_cut(syscall_arg(regs, 0));
	} else if (nr == EV_NR_open || nr == EV_NR_openat || nr == EV_NR_creat || nr == EV_NR_openat2) {
		if (nr == EV_NR_openat2) { /* struct open_how: flags first */
			flags = 0;
			bpf_probe_read_user(&flags, sizeof(flags), (void *)syscall_arg(regs, 2));
		} else {
			flags = nr == EV_NR_creat ? O_TRUNC_ : syscall_arg(regs, nr == EV_NR_openat ? 2 : 1);
		}
		if (flags & O_TRUNC_)
			file_cut(ret);
	} else if (nr == EV_NR_truncate || (nr == EV_NR_madvise && syscall_arg(regs, 2) == MADV_REMOVE_)) {
		removals_unfollowed();
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(removal_call_btf, struct pt_regs *regs, long ret)
{
	return removal_call(regs, ret);
}

SEC("raw_tp/sys_exit")
int removal_call_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return removal_call(bpf_rdonly_cast((void *)ctx->args[0], bpf_core_type_id_kernel(struct pt_regs)),
			    ctx->args[1]);
}

static __always_inline int uring_request(struct io_kiocb *req)
{
	__u8 opcode = BPF_CORE_READ(req, opcode);

	if (opcode == IORING_OP_FALLOCATE_ || opcode == IORING_OP_FTRUNCATE_)
		removals_unfollowed();
	return 0;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(uring_request_btf, struct io_kiocb *req)
{
	return uring_request(req);
}

SEC("raw_tp/io_uring_submit_req")
int BPF_PROG(uring_request_raw, struct io_kiocb *req)
{
	return uring_request(req);
}

/* ---- the buffer's own frames, from the exporter (iter/dmabuf, 6.16+) */

/* The dma-buf whose frames dump_buffer_frames writes (its inode, as fstat shows it). */
const volatile __u64 frames_of_inode = 0;

/* drivers/dma-buf/heaps/system_heap.c: the pages behind a system-heap buffer (absent from a heapless BTF). */
struct system_heap_buffer___dma_evidence {
	unsigned long len;
	struct sg_table sg_table;
} __attribute__((preserve_access_index));

/* drivers/dma-buf/udmabuf.c (7.2): one struct page * per page of the buffer. */
struct udmabuf___dma_evidence {
	unsigned long pagecount;
	struct page **pages;
} __attribute__((preserve_access_index));

/* drivers/dma-buf/heaps/cma_heap.c: one contiguous run of pages from the CMA area (cma_alloc). */
struct cma_heap_buffer___dma_evidence {
	struct page *cma_pages;
	unsigned long pagecount; /* pgoff_t */
} __attribute__((preserve_access_index));

/*
 * The address of cma_heap_buf_ops (kallsyms, set by user space; 0: none). A CMA-heap buffer's exp_name is its
 * heap's name, which is the CMA area's ("default_cma_region", "reserved", a device-tree node's): its ops say
 * what it is whatever the name.
 */
const volatile __u64 cma_heap_ops = 0;

#define SG_CHAIN_BIT 0x1UL
#define SG_END_BIT 0x2UL

struct frames_walk {
	__u64 cursor;		/* system heap: the scatterlist entry; udmabuf: the page index */
	__u64 limit;		/* udmabuf: pagecount */
	__u64 array;		/* udmabuf: pages */
	__u64 vmemmap;
	__u64 page_size;
	__u64 sg_size;		/* sizeof(struct scatterlist) */
	struct dma_evidence_frames run; /* the run being grown */
	struct dma_evidence_frame_count count;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frames_walk);
} frames_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 16); /* user space sizes it to the buffer's pages before load */
	__type(key, __u32);
	__type(value, struct dma_evidence_frames);
} frame_runs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dma_evidence_frame_count);
} frame_count SEC(".maps");

static __always_inline void frames_flush(struct frames_walk *f)
{
	__u32 index = f->count.runs;
	struct dma_evidence_frames *slot;

	if (!f->run.pages)
		return;
	/* past frame_runs' size (or 2^32 runs) the lookup fails: the pages are counted as cut */
	slot = index == f->count.runs ? bpf_map_lookup_elem(&frame_runs, &index) : NULL;
	if (slot) {
		*slot = f->run;
		f->count.runs++;
	} else {
		f->count.cut_pages += f->run.pages;
	}
	f->run.pages = 0;
}

/* Whether `next` carries on the run being grown: the frames follow, and so do the places (or neither has one). */
static __always_inline int run_continues(struct dma_evidence_frames *run, struct dma_evidence_frames *next)
{
	if (!run->pages || run->pfn + run->pages != next->pfn || run->named_by != next->named_by)
		return 0;
	return next->named_by != DMA_EVIDENCE_BY_PLACE ||
	       (run->ino == next->ino && run->dev == next->dev && run->index + run->pages == next->index);
}

static __always_inline void frames_add_named(struct frames_walk *f, struct dma_evidence_frames *next)
{
	if (run_continues(&f->run, next)) {
		f->run.pages += next->pages;
		return;
	}
	frames_flush(f);
	f->run = *next;
}

/* Pages of no file (a heap's, CMA's): the completion walk records what the device writes into them by frame. */
static __always_inline void frames_add(struct frames_walk *f, __u64 pfn, __u64 pages)
{
	struct dma_evidence_frames next = { .pfn = pfn, .pages = pages, .named_by = DMA_EVIDENCE_BY_FRAME };

	frames_add_named(f, &next);
}

static long heap_step(__u32 index, void *ctx)
{
	__u32 zero = 0;
	struct frames_walk *f = bpf_map_lookup_elem(&frames_state, &zero);
	struct scatterlist *sg;
	unsigned long link;
	__u32 offset, length;

	if (!f || !f->cursor)
		return 1;
	sg = (struct scatterlist *)f->cursor;
	link = BPF_CORE_READ(sg, page_link);
	if (link & SG_CHAIN_BIT) { /* sg_chain: this entry points at the next array */
		f->cursor = link & ~(SG_CHAIN_BIT | SG_END_BIT);
		return 0;
	}
	offset = BPF_CORE_READ(sg, offset);
	length = BPF_CORE_READ(sg, length);
	if (length)
		frames_add(f, ((link & ~(SG_CHAIN_BIT | SG_END_BIT)) - f->vmemmap) / f->page_size +
			      (offset >> DMA_EVIDENCE_PAGE_SHIFT),
			   ((offset & (DMA_EVIDENCE_PAGE_SIZE - 1)) + length + DMA_EVIDENCE_PAGE_SIZE - 1) >>
				   DMA_EVIDENCE_PAGE_SHIFT);
	f->cursor = (link & SG_END_BIT) ? 0 : f->cursor + f->sg_size;
	return 0;
}

/*
 * A udmabuf's page is named as the completion walk would name a device write into it (page_in_file, mapping_file):
 * by its place in its memfd, else (a hugetlbfs memfd's page, a page punched out of its memfd while pinned, any page
 * of no file, or a kernel whose struct page links no head) by its frame; DMA_EVIDENCE_UNNAMED when its folio's
 * head is not found (the completion walk counts such bytes lost). A frame alone would credit the place of another
 * file's page that the device wrote in this frame before the kernel moved it away and this page took the frame.
 */
static __always_inline void name_page(struct frames_walk *f, __u64 page, struct dma_evidence_frames *next)
{
	struct dma_evidence_file file = {};
	__u64 mapping = 0, index = 0;
	int found;

	next->named_by = DMA_EVIDENCE_BY_FRAME;
	if (!PAGE_HEAD_KNOWN)
		return;
	found = page_in_file(page, f->page_size, &mapping, &index);
	if (found == PAGE_HEADLESS) {
		next->named_by = DMA_EVIDENCE_UNNAMED;
	} else if (found == PAGE_IN_FILE && mapping_file(mapping, &file)) {
		next->named_by = DMA_EVIDENCE_BY_PLACE;
		next->ino = file.ino;
		next->dev = file.dev;
		next->index = index;
	}
}

static long udmabuf_step(__u32 index, void *ctx)
{
	__u32 zero = 0;
	struct frames_walk *f = bpf_map_lookup_elem(&frames_state, &zero);
	struct dma_evidence_frames next = { .pages = 1 };
	__u64 page = 0;

	if (!f || f->cursor >= f->limit)
		return 1;
	if (bpf_probe_read_kernel(&page, sizeof(page), (void *)(f->array + f->cursor * sizeof(page))) || !page)
		return 1;
	next.pfn = (page - f->vmemmap) / f->page_size;
	name_page(f, page, &next);
	frames_add_named(f, &next);
	f->cursor++;
	return 0;
}

SEC("iter/dmabuf")
int dump_buffer_frames(struct bpf_iter__dmabuf *ctx)
{
	struct dma_buf *dmabuf = ctx->dmabuf;
	struct frames_walk *f;
	char exporter[8] = {};
	const char *exp_name;
	void *priv;
	__u32 zero = 0;

	if (!dmabuf || BPF_CORE_READ(dmabuf, file, f_inode, i_ino) != frames_of_inode)
		return 0;
	f = bpf_map_lookup_elem(&frames_state, &zero);
	if (!f)
		return 0;
	__builtin_memset(f, 0, sizeof(*f));
	f->page_size = bpf_core_type_size(struct page);
	f->vmemmap = vmemmap_start(f->page_size);
	f->sg_size = bpf_core_type_size(struct scatterlist);
	if (!f->page_size || !f->sg_size || !f->vmemmap)
		return 0;
	exp_name = BPF_CORE_READ(dmabuf, exp_name);
	priv = BPF_CORE_READ(dmabuf, priv);
	if (!exp_name || !priv || bpf_probe_read_kernel_str(exporter, sizeof(exporter), exp_name) < 0)
		return 0;
	if (cma_heap_ops && (__u64)BPF_CORE_READ(dmabuf, ops) == cma_heap_ops) {
		__u64 first;

		if (!bpf_core_type_exists(struct cma_heap_buffer___dma_evidence))
			return 0;
		first = (__u64)BPF_CORE_READ((struct cma_heap_buffer___dma_evidence *)priv, cma_pages);
		if (!first)
			return 0;
		f->count.found = 1;
		frames_add(f, (first - f->vmemmap) / f->page_size,
			   BPF_CORE_READ((struct cma_heap_buffer___dma_evidence *)priv, pagecount));
	/* "system" is the system heap's exp_name (dma_heap_get_name); its priv is a system_heap_buffer. */
	} else if (exporter[0] == 's' && exporter[1] == 'y' && exporter[2] == 's' && exporter[3] == 't' &&
	    exporter[4] == 'e' && exporter[5] == 'm' && exporter[6] == 0) {
		if (!bpf_core_type_exists(struct system_heap_buffer___dma_evidence))
			return 0;
		f->count.found = 1;
		f->cursor = (__u64)BPF_CORE_READ((struct system_heap_buffer___dma_evidence *)priv, sg_table.sgl);
		bpf_loop(DMA_EVIDENCE_MAX_FRAME_STEPS, heap_step, NULL, 0);
	} else if (exporter[0] == 'u' && exporter[1] == 'd' && exporter[2] == 'm' && exporter[3] == 'a' &&
		   exporter[4] == 'b' && exporter[5] == 'u' && exporter[6] == 'f' && exporter[7] == 0) {
		if (!bpf_core_type_exists(struct udmabuf___dma_evidence) ||
		    !bpf_core_field_exists(struct udmabuf___dma_evidence, pages))
			return 0;
		f->count.found = 1;
		f->limit = BPF_CORE_READ((struct udmabuf___dma_evidence *)priv, pagecount);
		f->array = (__u64)BPF_CORE_READ((struct udmabuf___dma_evidence *)priv, pages);
		bpf_loop(DMA_EVIDENCE_MAX_FRAME_STEPS, udmabuf_step, NULL, 0);
	}
	f = bpf_map_lookup_elem(&frames_state, &zero);
	if (!f)
		return 0;
	frames_flush(f);
	bpf_map_update_elem(&frame_count, &zero, &f->count, BPF_ANY);
	return 0;
}
