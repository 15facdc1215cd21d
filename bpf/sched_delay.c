/* sched_delay: run-queue delay (wakeup, or preemption, to running) as a histogram.
 *
 * A task becomes runnable at sched_wakeup / sched_wakeup_new, or when it is
 * switched out while still runnable (preempted); the delay ends when
 * sched_switch puts it on a CPU. One of (sample_mask + 1) enqueues per CPU is
 * timed, in a slot indexed by thread id (an array: no hash map on the switch
 * path); a slot taken over by another thread before it ran is counted lost.
 */
BPF_ARRAY(cfg, struct kerno_cfg, 1);
BPF_PERCPU_ARRAY(tick, u64, 1);
BPF_ARRAY(slots, struct kerno_slot, KERNO_SLOT_MASK + 1);
BPF_PERCPU_ARRAY(hist, u64, KERNO_HIST_SLOTS);
BPF_PERCPU_ARRAY(lost, u64, 1);

static __always_inline int kerno_enqueue(u32 tid)
{
    u32 zero = 0;
    if (!tid)
        return 0;
    struct kerno_cfg *c = cfg.lookup(&zero);
    if (!c)
        return 0;
    if (c->tgid && tid != c->tgid)
        return 0;
    u64 *t = tick.lookup(&zero);
    if (!t)
        return 0;
    u64 n = *t;
    *t = n + 1;
    if (n & c->sample_mask)
        return 0;
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

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    return kerno_enqueue(args->pid);
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    return kerno_enqueue(args->pid);
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    /* No sleeping state bit: switched out while runnable, back on the run queue. */
    if ((args->prev_state & 0xff) == 0)
        kerno_enqueue(args->prev_pid);
    u32 tid = args->next_pid;
    if (!tid)
        return 0;
    u32 idx = tid & KERNO_SLOT_MASK;
    struct kerno_slot *s = slots.lookup(&idx);
    if (!s || !s->ts || s->tid != tid)
        return 0;
    u64 delta = bpf_ktime_get_ns() - s->ts;
    s->ts = 0;
    hist.increment(kerno_bucket(delta));
    return 0;
}
