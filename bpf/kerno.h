/* Shared by every kerno-otel BPF program: the config map and the latency histogram.
 *
 * The loader prepends this file to each program's text before bcc compiles it.
 */
#include <uapi/linux/ptrace.h>

/* Histogram slots: values 0-3 exactly, then 4 slots per power of two (25% wide).
 * Slot b >= 4 holds [(4 + b%4) << (b/4 - 2), (5 + b%4) << (b/4 - 2)). */
#define KERNO_HIST_SLOTS 256
/* Threads whose in-flight start times are kept, indexed by tid & KERNO_SLOT_MASK. */
#define KERNO_SLOT_MASK 0xffff

/* Set from user space after load; all zero means: every event, no sampling. */
struct kerno_cfg {
    u32 tgid;         /* count only this process (a thread id for sched_delay); 0: all */
    u32 dev;          /* count only this block device (kernel dev_t); 0: all */
    u32 port;         /* count only TCP sockets with this local or remote port; 0: all */
    u32 sample_mask;  /* time one event in (sample_mask + 1) per CPU; 0: every one */
};

/* A start time waiting for its end, owned by one thread. */
struct kerno_slot {
    u64 ts;
    u32 tid;
    u32 pad;
};

static __always_inline u32 kerno_bucket(u64 v)
{
    if (v < 4)
        return v;
    u32 l = bpf_log2l(v) - 1; /* floor(log2(v)), >= 2 */
    u32 b = l * 4 + ((v >> (l - 2)) & 3);
    return b < KERNO_HIST_SLOTS ? b : KERNO_HIST_SLOTS - 1;
}
