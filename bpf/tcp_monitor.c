/* tcp_monitor: TCP retransmits, connects (active), accepts (passive) and closes.
 *
 * Per-CPU counters only. Neither tracepoint carries a round-trip time, so the
 * RTT signal stays absent (tcp:tcp_probe has srtt, but fires on every ACK).
 */
#define KERNO_IPPROTO_TCP 6
#define KERNO_TCP_ESTABLISHED 1
#define KERNO_TCP_SYN_SENT 2
#define KERNO_TCP_SYN_RECV 3
#define KERNO_TCP_CLOSE 7

/* counts slots */
#define KERNO_RETRANSMITS 0
#define KERNO_CONNECTS 1
#define KERNO_ACCEPTS 2
#define KERNO_CLOSES 3

BPF_ARRAY(cfg, struct kerno_cfg, 1);
BPF_PERCPU_ARRAY(counts, u64, 4);

static __always_inline int kerno_port_ok(u16 sport, u16 dport)
{
    u32 zero = 0;
    struct kerno_cfg *c = cfg.lookup(&zero);
    if (!c)
        return 0;
    return !c->port || sport == c->port || dport == c->port;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    if (kerno_port_ok(args->sport, args->dport))
        counts.increment(KERNO_RETRANSMITS);
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != KERNO_IPPROTO_TCP)
        return 0;
    if (!kerno_port_ok(args->sport, args->dport))
        return 0;
    int newstate = args->newstate;
    if (newstate == KERNO_TCP_ESTABLISHED) {
        if (args->oldstate == KERNO_TCP_SYN_SENT)
            counts.increment(KERNO_CONNECTS);
        else if (args->oldstate == KERNO_TCP_SYN_RECV)
            counts.increment(KERNO_ACCEPTS);
    } else if (newstate == KERNO_TCP_CLOSE) {
        counts.increment(KERNO_CLOSES);
    }
    return 0;
}
