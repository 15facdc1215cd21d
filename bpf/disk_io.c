/* disk_io: block request latency (issue to completion) per direction, counts and bytes.
 *
 * Requests in flight are keyed by (device, sector) in a bounded hash map; an
 * issue that finds the map full is counted lost. Block I/O is orders of
 * magnitude rarer than syscalls, so every request is timed.
 */
#define KERNO_INFLIGHT 8192

struct kerno_rq {
    u64 sector;
    u32 dev;
    u32 pad;
};

/* stats slots */
#define KERNO_READS 0
#define KERNO_WRITES 1
#define KERNO_READ_BYTES 2
#define KERNO_WRITE_BYTES 3
#define KERNO_OTHER 4

BPF_ARRAY(cfg, struct kerno_cfg, 1);
BPF_HASH(inflight, struct kerno_rq, u64, KERNO_INFLIGHT);
BPF_PERCPU_ARRAY(read_hist, u64, KERNO_HIST_SLOTS);
BPF_PERCPU_ARRAY(write_hist, u64, KERNO_HIST_SLOTS);
BPF_PERCPU_ARRAY(stats, u64, 5);
BPF_PERCPU_ARRAY(lost, u64, 1);

TRACEPOINT_PROBE(block, block_rq_issue)
{
    u32 zero = 0;
    struct kerno_cfg *c = cfg.lookup(&zero);
    if (!c)
        return 0;
    if (c->dev && args->dev != c->dev)
        return 0;
    struct kerno_rq key = {.sector = args->sector, .dev = args->dev};
    u64 ts = bpf_ktime_get_ns();
    if (inflight.update(&key, &ts) != 0)
        lost.increment(zero);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete)
{
    struct kerno_rq key = {.sector = args->sector, .dev = args->dev};
    u64 *ts = inflight.lookup(&key);
    if (!ts)
        return 0;
    u64 delta = bpf_ktime_get_ns() - *ts;
    inflight.delete(&key);
    u64 bytes = (u64)args->nr_sector << 9;
    /* rwbs: an optional F (flush) then R, W, D (discard) or N (none). A flush
     * carries no data (a write of 0 sectors): counted as other, not as a write. */
    char op = args->rwbs[0] == 'F' ? args->rwbs[1] : args->rwbs[0];
    if (!bytes)
        op = 'N';
    if (op == 'R') {
        read_hist.increment(kerno_bucket(delta));
        stats.increment(KERNO_READS);
        stats.increment(KERNO_READ_BYTES, bytes);
    } else if (op == 'W') {
        write_hist.increment(kerno_bucket(delta));
        stats.increment(KERNO_WRITES);
        stats.increment(KERNO_WRITE_BYTES, bytes);
    } else {
        stats.increment(KERNO_OTHER);
    }
    return 0;
}
