//! Builds swarm-init (`init/init.c`), the init a task with `init: true` runs as PID 1, as a
//! static executable: the container's image may have no C library. The agent embeds it.

#[path = "../build-support/static_c.rs"]
mod static_c;

fn main() {
    static_c::static_executable("init/init.c", "swarm-init");
}
