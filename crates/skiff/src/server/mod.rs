//! `skiff server`: the daemon. It wires the store, the image store, the Linux runtime,
//! the router and the control plane together, serves the REST API, reloads every service
//! at start, and shuts down cleanly on SIGTERM/SIGINT: no new requests, those in flight
//! finish, then instances stop gracefully.
//!
//! Business rules live in the crates (`skiff-control` above all); this module only
//! connects them.

mod api;
mod api_audit;
mod api_auth;
mod api_configmaps;
mod api_events;
mod api_invocations;
mod api_secrets;
mod api_tls;
mod api_tokens;
mod network;
mod registry;
mod scaling;
mod tls;

use crate::home::Home;
use anyhow::Context;
use clap::Args;
use skiff_control::linux::LinuxRuntime;
use skiff_control::{Control, ControlConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Default control-plane socket.
pub const DEFAULT_SOCKET: &str = "/run/skiff/skiff.sock";

#[derive(Args)]
pub struct ServerArgs {
    /// Address the ingress (HTTP router) listens on.
    #[arg(long, env = "SKIFF_INGRESS", default_value = "127.0.0.1:8080")]
    ingress: SocketAddr,
    /// Domain under which services are reached: NAME.<domain>.
    #[arg(long, env = "SKIFF_DOMAIN", default_value = "localhost")]
    domain: String,
    /// Requests that may wait for an instance, per revision; past it: 429.
    #[arg(long, default_value_t = 1000)]
    queue_depth: usize,
    /// How long a stopping daemon lets requests in flight (a stream, an idle WebSocket)
    /// finish before it cuts them.
    #[arg(long, default_value = "30s", value_parser = crate::launch::parse_duration)]
    drain_timeout: Duration,
    /// How long a client may pause while sending a request body; past it the request is
    /// abandoned (408 when no instance has it yet) and its slot freed.
    #[arg(long, default_value = "60s", value_parser = crate::launch::parse_duration)]
    client_body_timeout: Duration,
    /// The most client connections served at once, the ingress's and calls between
    /// services' together (default: half the descriptor limit); past it a new one gets 503.
    #[arg(long)]
    max_connections: Option<usize>,
    /// How fast one instance's output is logged, in bytes a second; past a burst of eight
    /// times that, the app waits on its full pipe (the flood costs its own time, not the
    /// daemon's or its neighbours': bench/log-flood).
    #[arg(long, default_value = "256Ki", value_parser = crate::launch::parse_memory)]
    log_rate: u64,
    /// What the logs of all instances may hold together (default: a tenth of the file
    /// system holding the data directory, at most 4Gi); past it the oldest logs of ended
    /// instances go, and new output is dropped (and counted in the log) until they fit.
    #[arg(long, value_parser = crate::launch::parse_memory)]
    log_budget: Option<u64>,
    /// Grace period between SIGTERM and SIGKILL when stopping an instance.
    #[arg(long, default_value = "10s", value_parser = crate::launch::parse_duration)]
    stop_timeout: Duration,
    /// Threads serving the ingress, each with its own event loop (default: one per CPU).
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()))]
    router_threads: usize,
    /// Threads that start sandboxes.
    #[arg(long, default_value_t = 2)]
    spawn_threads: usize,
    /// Do not keep a prepared (cloned, mounted, not yet started) sandbox per revision;
    /// every cold start then pays for the whole sandbox setup.
    #[arg(long)]
    no_prepared_sandboxes: bool,
    /// Revisions kept per service (newest first); older ones that get no traffic and
    /// have no tag are deleted.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    revisions_kept: u32,
    /// Do not pass bytes between the router and instances straight from socket to socket
    /// (an eBPF sockmap); they then cross the instance's loopback TCP/IP stack.
    #[arg(long, env = "SKIFF_NO_UPSTREAM_SHORTCUT")]
    no_upstream_shortcut: bool,
    /// The subnet instances get their addresses from (a /30 each; the first holds the
    /// addresses of skiff's DNS and services, and of host.skiff.internal). Each daemon
    /// on a host needs its own.
    #[arg(long, env = "SKIFF_INSTANCE_SUBNET", default_value = skiff_net::DEFAULT_SUBNET)]
    instance_subnet: skiff_net::Subnet,
    /// Where names that are not skiff's are resolved (ADDRESS:PORT, repeatable; default:
    /// the nameservers of the host's /etc/resolv.conf).
    #[arg(long, value_name = "ADDRESS:PORT")]
    dns_upstream: Vec<SocketAddr>,
    /// Where the built-in registry (the OCI distribution API) listens; pushes need the
    /// token in $SKIFF_HOME/registry.token as the password.
    #[arg(long, env = "SKIFF_REGISTRY", default_value = "127.0.0.1:5000")]
    registry: SocketAddr,
    /// Serve no registry.
    #[arg(long)]
    no_registry: bool,
    /// Run every instance with host ids (no user namespaces), whatever its spec says.
    #[arg(long)]
    no_user_namespaces: bool,
    /// Serve the registry over TLS with this certificate chain (PEM)…
    #[arg(long, value_name = "FILE", requires = "registry_key")]
    registry_cert: Option<PathBuf>,
    /// …and this private key (PEM).
    #[arg(long, value_name = "FILE", requires = "registry_cert")]
    registry_key: Option<PathBuf>,
    /// Also serve the control-plane API over TCP with TLS on this address (port 0: any),
    /// to bearer tokens (`skiff token`); the certificate is `$SKIFF_HOME/api.crt` (made
    /// at the first start, with its authority's fingerprint printed for pinning).
    #[arg(long, value_name = "ADDR")]
    api_listen: Option<SocketAddr>,
    /// Serve the TCP API with this certificate chain (PEM; the last one is the one whose
    /// fingerprint is printed) instead of the one skiff makes…
    #[arg(long, value_name = "FILE", requires_all = ["api_key", "api_listen"])]
    api_cert: Option<PathBuf>,
    /// …and this private key (PEM).
    #[arg(long, value_name = "FILE", requires = "api_cert")]
    api_key: Option<PathBuf>,
    /// The key secrets are sealed under: 64 hex digits in a file only the daemon's user
    /// may read (default: `$SKIFF_HOME/secrets.key`, made at the first start). A key
    /// supplied here (by a KMS, say) must exist: it is never made.
    #[arg(long, env = "SKIFF_SECRETS_KEY_FILE", value_name = "FILE")]
    secrets_key_file: Option<PathBuf>,
    #[command(flatten)]
    scaling: scaling::ScalingArgs,
}

/// The master key for secrets: the operator's file, or the data directory's (made at the
/// first start). A key file that is there but unusable stops the daemon: secrets sealed
/// under it must not be taken for lost.
fn secrets_key(
    home: &Home,
    supplied: Option<&Path>,
) -> anyhow::Result<Arc<skiff_secrets::MasterKey>> {
    let key = match supplied {
        Some(path) => skiff_secrets::MasterKey::load(path)?,
        None => {
            let path = home.root.join("secrets.key");
            let (key, made) = skiff_secrets::MasterKey::load_or_create(&path)?;
            if made {
                eprintln!(
                    "skiff server: made the secrets key {} ({}); keep a copy apart from \
                     backups of the database",
                    path.display(),
                    key.id()
                );
            }
            key
        }
    };
    Ok(Arc::new(key))
}

/// Starts the API over TLS on `addr`: its address, and the task serving it.
async fn start_tcp_api(
    home: &Home,
    addr: SocketAddr,
    given: Option<(&Path, &Path)>,
    ctl: &Arc<Control>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let (tls, fingerprint, cert) = api_tls::certificate(&home.root, addr, given)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for the API on {addr}"))?;
    let bound = listener.local_addr().context("reading the API's address")?;
    eprintln!(
        "skiff server: API on https://{bound} for tokens; clients trust {} (SHA-256 {fingerprint})",
        cert.display()
    );
    let app = api::tcp_routes(Arc::clone(ctl), stop.clone());
    let task = tokio::spawn(tls::serve("api", app, listener, tls, stop.clone()));
    Ok((bound, task))
}

/// Whether instances get user namespaces: unless turned off, where the kernel can make
/// them and show the image layers' file system through them.
fn user_namespaces(images: &skiff_image::ImageStore, off: bool) -> bool {
    if off {
        eprintln!(
            "skiff server: user namespaces off (--no-user-namespaces): instances run with host ids"
        );
        return false;
    }
    let dir = images.snapshots_dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!("user namespaces off: creating {}: {e}", dir.display());
        return false;
    }
    match skiff_sandbox::userns::check_support(&dir) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("user namespaces off: instances run with host ids: {e}");
            false
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(home: Home, socket: PathBuf, args: ServerArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skiff-worker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(home, socket, args))?;
    Ok(0)
}

async fn serve(home: Home, socket: PathBuf, args: ServerArgs) -> anyhow::Result<()> {
    // First of all: nothing else may touch a directory another daemon runs on.
    let _lock = home.lock_for_daemon()?;
    raise_descriptor_limit();
    let mut db = home.db()?;
    db.check_integrity()?;
    home.warn_if_database_lost(&db)?;
    let images = home.images()?;
    let secrets_key = secrets_key(&home, args.secrets_key_file.as_deref())?;
    let sandbox = Arc::new(crate::launch::sandbox(&home)?);
    crate::launch::reclaim_lost(&mut db, &sandbox, &home.run_dir())
        .context("reclaiming instances of a previous daemon")?;
    crate::launch::reclaim_unowned(&db, &sandbox, &home.run_dir())
        .context("reclaiming what instances of a previous daemon left")?;
    let api_listener = api::bind(&socket)?;
    let _shortcut = upstream_shortcut(args.no_upstream_shortcut);
    let router = skiff_router::Router::new(&args.domain);
    router.set_body_idle_timeout(args.client_body_timeout);
    if let Some(max) = args.max_connections {
        router.set_max_connections(max);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ingress_addr, ingress_done) = router
        .clone()
        .serve_threads(args.ingress, args.router_threads, stop_rx.clone())
        .with_context(|| format!("listening for ingress on {}", args.ingress))?;
    let (network, internal_done) =
        network::start(&args.instance_subnet, &args.dns_upstream, &router, &stop_rx).await?;
    let log_budget = Arc::new(skiff_sandbox::LogBudget::new(
        args.log_budget
            .unwrap_or_else(|| default_log_budget(&home.root)),
        0,
    ));
    let log_limits = skiff_sandbox::LogLimits {
        rate: Some(skiff_sandbox::LogRate {
            bytes_per_sec: args.log_rate,
            burst: args.log_rate.saturating_mul(8),
        }),
        budget: Some(Arc::clone(&log_budget)),
    };
    let linux = LinuxRuntime::new(
        Arc::clone(&sandbox),
        args.spawn_threads,
        home.run_dir(),
        Some(Arc::clone(&network)),
        log_limits,
    )
    .context("starting the spawner threads")?
    .with_user_namespaces(user_namespaces(&images, args.no_user_namespaces));
    let registry_listener = if args.no_registry {
        None
    } else {
        registry::bind(args.registry).await
    };
    let registry_addr = match &registry_listener {
        Some(l) => Some(
            l.local_addr()
                .context("reading the registry's address")?
                .to_string(),
        ),
        None => None,
    };
    let config = ControlConfig {
        domain: args.domain.trim_matches('.').to_owned(),
        ingress_port: ingress_addr.port(),
        queue_depth: args.queue_depth,
        revisions_kept: args.revisions_kept as usize,
        stop_grace: args.stop_timeout,
        prepare_sandboxes: !args.no_prepared_sandboxes,
        scaling: args.scaling.into(),
        start_time: crate::launch::process_start_time(std::process::id()).unwrap_or(0),
        logs_dir: home.logs_dir(),
        home: home.root.clone(),
        own_registry: registry_addr.clone(),
        secrets_key,
    };
    let ctl = Control::new(config, db, images, Arc::new(linux), router);
    ctl.enforce_log_budget(&log_budget);
    tokio::spawn(keep_logs_in_budget(
        Arc::clone(&ctl),
        log_budget,
        stop_rx.clone(),
    ));
    ctl.restore().await;
    ctl.start_invocations()
        .context("starting the delivery of async invocations")?;

    let registry_task = match (registry_listener, &registry_addr) {
        (Some(listener), Some(addr)) => {
            let hosted = Arc::new(skiff_registry::Hosted::new(
                home.images()?,
                home.db()?,
                addr.clone(),
            ));
            let token = registry::token(&home.root)?;
            Some(match (&args.registry_cert, &args.registry_key) {
                (Some(cert), Some(key)) => {
                    let tls = tls::config(cert, key)?;
                    tokio::spawn(registry::serve_tls(
                        hosted,
                        token,
                        listener,
                        tls,
                        stop_rx.clone(),
                    ))
                }
                _ => tokio::spawn(registry::serve(hosted, token, listener, stop_rx.clone())),
            })
        }
        _ => None,
    };
    let tcp_api = match args.api_listen {
        Some(addr) => {
            let given = args.api_cert.as_deref().zip(args.api_key.as_deref());
            Some(start_tcp_api(&home, addr, given, &ctl, &stop_rx).await?)
        }
        None => None,
    };
    let api_task = tokio::spawn(api::serve(Arc::clone(&ctl), api_listener, stop_rx));
    let terminated = termination()?;
    let tcp_api_addr = tcp_api
        .as_ref()
        .map(|(addr, _)| format!(" and https://{addr}"))
        .unwrap_or_default();
    println!(
        "skiff server: ingress http://{ingress_addr} (services at http://NAME.{}:{}/), api unix:{}{tcp_api_addr}, registry {}",
        ctl.config().domain,
        ingress_addr.port(),
        socket.display(),
        registry_addr.as_deref().unwrap_or("off")
    );

    terminated.await;
    eprintln!("skiff server: shutting down: finishing requests in flight");
    let _ = stop_tx.send(true);
    let drained = async {
        let _ = ingress_done.await;
        let _ = internal_done.await;
    };
    if tokio::time::timeout(args.drain_timeout, drained)
        .await
        .is_err()
    {
        eprintln!(
            "skiff server: requests still in flight after {:?}: cutting them",
            args.drain_timeout
        );
    }
    eprintln!("skiff server: stopping instances");
    ctl.shutdown().await;
    network.remove();
    sandbox.remove_scope(&home.run_dir());
    let _ = api_task.await;
    if let Some((_, task)) = tcp_api {
        let _ = task.await;
    }
    if let Some(task) = registry_task {
        let _ = task.await;
    }
    let _ = std::fs::remove_file(&socket);
    // The database file alone is then the whole state (a copy of it is a backup).
    if let Err(e) = home
        .db()
        .and_then(|db| db.checkpoint().map_err(anyhow::Error::from))
    {
        eprintln!("skiff server: checkpointing the database: {e:#}");
    }
    eprintln!("skiff server: stopped");
    Ok(())
}

/// A tenth of the file system holding `home`, at most 4 GiB.
fn default_log_budget(home: &Path) -> u64 {
    const MAX: u64 = 4 << 30;
    rustix::fs::statvfs(home).map_or(MAX, |st| {
        (st.f_blocks.saturating_mul(st.f_frsize) / 10).min(MAX)
    })
}

/// Every ten seconds, counts what the logs hold (deleted ones free their share) and
/// deletes the oldest of ended instances past the budget; makes the space reserve again
/// once the disk has room.
async fn keep_logs_in_budget(
    ctl: Arc<Control>,
    budget: Arc<skiff_sandbox::LogBudget>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (ctl, budget) = (Arc::clone(&ctl), Arc::clone(&budget));
        let _ = tokio::task::spawn_blocking(move || {
            ctl.enforce_log_budget(&budget);
            ctl.ensure_space_reserve();
        })
        .await;
    }
}

/// Every instance holds a dozen descriptors: the soft limit (1,024 by default) goes up
/// to the hard one, and a low hard limit is named, since it bounds the instance count.
fn raise_descriptor_limit() {
    use skiff_kernel::descriptors;
    match descriptors::raise_soft_limit() {
        Ok(l) if l.soft < 4096 => eprintln!(
            "skiff server: only {} file descriptors (RLIMIT_NOFILE, hard limit {}): a few dozen \
             instances at most; raise it (ulimit -Hn, systemd's LimitNOFILE=)",
            l.soft, l.hard
        ),
        Ok(_) => {}
        Err(e) => eprintln!("skiff server: raising the file descriptor limit: {e}"),
    }
}

/// Installs the upstream shortcut unless told not to; without it (an old kernel, no
/// cgroup2, no CAP_BPF) the router works the same, only slower.
fn upstream_shortcut(disabled: bool) -> Option<skiff_router::Shortcut> {
    if disabled {
        eprintln!("skiff server: upstream shortcut off (--no-upstream-shortcut)");
        return None;
    }
    match skiff_router::Shortcut::install() {
        Ok(s) => {
            eprintln!(
                "skiff server: upstream shortcut on (sockmap, attached to cgroup {})",
                s.cgroup().display()
            );
            Some(s)
        }
        Err(e) => {
            eprintln!("skiff server: upstream shortcut off: {e}");
            None
        }
    }
}

/// Takes SIGTERM and SIGINT from now on; the future resolves when one comes. Made before
/// the ready line is printed: a signal sent right after it must not find the default
/// action (death, skipping the clean stop).
fn termination() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("taking SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("taking SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
