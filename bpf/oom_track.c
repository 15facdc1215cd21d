/* oom_track: OOM kills, each victim sent to user space (rare events: a perf buffer).
 *
 * Only the victim's pid is read (the one field oom:mark_victim has on every
 * kernel since 4.x); user space turns it into a command name and never lets
 * the pid out of the process. Events the perf buffer could not take are
 * counted lost by the reader.
 */
struct kerno_oom {
    u32 pid;
};

BPF_ARRAY(cfg, struct kerno_cfg, 1);
BPF_PERCPU_ARRAY(kills, u64, 1);
BPF_PERF_OUTPUT(victims);

TRACEPOINT_PROBE(oom, mark_victim)
{
    u32 zero = 0;
    kills.increment(zero);
    struct kerno_oom e = {.pid = args->pid};
    victims.perf_submit(args, &e, sizeof(e));
    return 0;
}
