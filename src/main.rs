#![forbid(unsafe_code)]

/// jemalloc: a sweep's transient buffers (pages of Ironic's answer, decoded images) sit
/// between the index's long-lived allocations; jemalloc hands the freed pages back to the
/// system after a few seconds, where glibc's allocator kept most of them resident.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    keep_running_on_sighup();
    ironic_metadata::main()
}

/// SIGHUP asks for a reload, and its default action ends the process. The reload watchers
/// listen for it only once their services run, a while after start-up; so its handler is
/// installed first thing, for the whole process (tokio never uninstalls one), and a SIGHUP
/// received before the watchers listen is a no-op instead of the end of the service.
fn keep_running_on_sighup() {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build();
    if let Ok(rt) = rt {
        rt.block_on(async {
            let _ = signal(SignalKind::hangup());
        });
    }
}
