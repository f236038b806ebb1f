// Socket-level balancing of virtual IPs: a task's connect() to a service's VIP is sent to
// one of the service's serving tasks before the first packet exists, so the connection
// runs to the task's own address with no NAT on any packet; getpeername() on it still
// gives the VIP, as through a NAT. The agent attaches these programs to the cgroup v2
// root (every process of the machine runs them) and fills the first two maps from the
// node's endpoint table; see agent/src/network/vip/socket.rs.
// What it does not take (UDP, a task the node has not registered, a service with more
// backends than a map value holds) goes on to the VIP, which the node's nftables DNAT
// balances as before.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// Keep in step with socket.rs.
#define MAX_BACKENDS 128
#define IPPROTO_TCP 6

// A VIP's service: the overlay network (by VNI) it is reached on, and the addresses of
// its serving tasks, in network byte order.
struct service {
	__u32 network;
	__u32 count;
	__u32 backends[MAX_BACKENDS];
};

// A task of the node (by its network namespace's cookie) on a network (by VNI).
struct membership {
	__u64 netns;
	__u32 network;
	__u32 padding;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct service);
} SERVICES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct membership);
	__type(value, __u8);
} MEMBERSHIPS SEC(".maps");

// What each rewritten socket asked for, by socket cookie (never reused): the VIP, which
// getpeername() gives back while the socket is still connected to the task chosen (a
// socket connected again elsewhere shows its new peer). When the map is full the least
// recently used entries go (about: LRU lists are per CPU): an old connection then shows
// its task's address.
struct asked {
	__u32 vip;
	__u32 task;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct asked);
} ASKED SEC(".maps");

SEC("cgroup/connect4")
int vip_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 1;
	__u32 vip = ctx->user_ip4;
	struct service *service = bpf_map_lookup_elem(&SERVICES, &vip);
	if (!service)
		return 1;
	// Only a task on the VIP's network reaches it; any other socket (another node's
	// task, the host) is left as it is.
	struct membership member = {
		.netns = bpf_get_netns_cookie(ctx),
		.network = service->network,
	};
	if (!bpf_map_lookup_elem(&MEMBERSHIPS, &member))
		return 1;
	__u32 count = service->count;
	if (count == 0 || count > MAX_BACKENDS)
		return 1;
	__u32 pick = bpf_get_prandom_u32() % count;
	// The verifier cannot bound a remainder: the mask (a no-op, as count <= MAX_BACKENDS,
	// a power of two) proves the index in range; the barrier keeps clang from dropping it.
	asm volatile("" : "+r"(pick));
	pick &= MAX_BACKENDS - 1;
	struct asked asked = {
		.vip = vip,
		.task = service->backends[pick],
	};
	ctx->user_ip4 = asked.task;
	__u64 socket = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&ASKED, &socket, &asked, BPF_ANY);
	return 1;
}

SEC("cgroup/getpeername4")
int vip_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 socket = bpf_get_socket_cookie(ctx);
	struct asked *asked = bpf_map_lookup_elem(&ASKED, &socket);
	if (asked && ctx->user_ip4 == asked->task)
		ctx->user_ip4 = asked->vip;
	return 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
