/* fd_track: successful openat and close calls per process (fd growth = opens - closes).
 *
 * One entry per process (tgid) in a bounded hash map, with the command name
 * taken at its first event; user space removes the entries of processes that
 * have exited. An event that finds the map full is counted lost.
 */
#define KERNO_PROCS 8192

struct kerno_fds {
    u64 opens;
    u64 closes;
    char comm[16];
};

BPF_ARRAY(cfg, struct kerno_cfg, 1);
BPF_HASH(procs, u32, struct kerno_fds, KERNO_PROCS);
BPF_PERCPU_ARRAY(lost, u64, 1);

static __always_inline int kerno_count(int opened)
{
    u32 zero = 0;
    struct kerno_cfg *c = cfg.lookup(&zero);
    if (!c)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (c->tgid && tgid != c->tgid)
        return 0;
    struct kerno_fds *v = procs.lookup(&tgid);
    if (!v) {
        struct kerno_fds fresh = {};
        bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
        if (procs.insert(&tgid, &fresh) != 0 && procs.lookup(&tgid) == 0) {
            lost.increment(zero);
            return 0;
        }
        v = procs.lookup(&tgid);
        if (!v)
            return 0;
    }
    if (opened)
        __sync_fetch_and_add(&v->opens, 1);
    else
        __sync_fetch_and_add(&v->closes, 1);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
    if (args->ret < 0)
        return 0;
    return kerno_count(1);
}

TRACEPOINT_PROBE(syscalls, sys_exit_close)
{
    if (args->ret < 0)
        return 0;
    return kerno_count(0);
}
