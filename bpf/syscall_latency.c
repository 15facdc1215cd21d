/* syscall_latency: per-syscall counts and errors, and a latency histogram of sampled calls.
 *
 * raw_syscalls:sys_enter / sys_exit fire for every syscall on the host, so the
 * per-event work is kept to per-CPU array updates (no hash map, no lock):
 * - every exit counts the call, and its error when the return value is negative
 *   (except "try again" and "interrupted": EAGAIN, EINTR and the kernel's restart
 *   codes, which a busy non-blocking program returns all day without failing);
 * - one enter in (sample_mask + 1) per CPU stores its start time in a slot
 *   indexed by thread id; the exit of that thread closes the sample into the
 *   histogram. A slot taken over by another thread before its exit is counted lost.
 */
#define KERNO_NR_SYSCALLS 512

/* Calls and errors of one syscall number side by side: one lookup per exit. */
struct kerno_calls {
    u64 calls;
    u64 errors;
};

BPF_ARRAY(cfg, struct kerno_cfg, 1);
BPF_PERCPU_ARRAY(tick, u64, 1);
BPF_ARRAY(slots, struct kerno_slot, KERNO_SLOT_MASK + 1);
BPF_PERCPU_ARRAY(calls, struct kerno_calls, KERNO_NR_SYSCALLS);
BPF_PERCPU_ARRAY(hist, u64, KERNO_HIST_SLOTS);
BPF_PERCPU_ARRAY(lost, u64, 1);

TRACEPOINT_PROBE(raw_syscalls, sys_enter)
{
    u32 zero = 0;
    struct kerno_cfg *c = cfg.lookup(&zero);
    if (!c)
        return 0;
    /* The thread id is only needed for a filter or a sample: not on 63 calls in 64. */
    u64 id = 0;
    if (c->tgid) {
        id = bpf_get_current_pid_tgid();
        if ((id >> 32) != c->tgid)
            return 0;
    }
    u64 *t = tick.lookup(&zero);
    if (!t)
        return 0;
    u64 n = *t;
    *t = n + 1;
    if (n & c->sample_mask)
        return 0;
    if (!id)
        id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    u32 idx = tid & KERNO_SLOT_MASK;
    struct kerno_slot *s = slots.lookup(&idx);
    if (!s)
        return 0;
    if (s->ts && s->tid != tid)
        lost.increment(zero);
    s->tid = tid;
    s->ts = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(raw_syscalls, sys_exit)
{
    u32 zero = 0;
    struct kerno_cfg *c = cfg.lookup(&zero);
    if (!c)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if (c->tgid && (id >> 32) != c->tgid)
        return 0;
    long nr = args->id;
    if (nr >= 0 && nr < KERNO_NR_SYSCALLS) {
        u32 key = nr;
        struct kerno_calls *k = calls.lookup(&key);
        if (k) {
            k->calls++;
            long ret = args->ret;
            if (ret < 0 && ret != -11 /* EAGAIN */ && ret != -4 /* EINTR */ &&
                (ret < -516 || ret > -512) /* ERESTARTSYS .. ERESTART_RESTARTBLOCK */)
                k->errors++;
        }
    }
    u32 tid = (u32)id;
    u32 idx = tid & KERNO_SLOT_MASK;
    struct kerno_slot *s = slots.lookup(&idx);
    if (!s || !s->ts || s->tid != tid)
        return 0;
    u64 delta = bpf_ktime_get_ns() - s->ts;
    s->ts = 0;
    hist.increment(kerno_bucket(delta));
    return 0;
}
