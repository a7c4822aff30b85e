//! Wiring: open the store, bind the listeners, build the HTTP apps and the background workers, and
//! shut them down in order (unready -> stop accepting -> finish in-flight requests -> stop workers
//! after their current batch -> close the store).
//!
//! Two listeners, two surfaces: the public one (`listen`) serves what form providers and load
//! balancers need, webhooks and probes; the operator one (`admin_listen`) serves metrics and the
//! admin API (and the probes). When `admin_listen` is the `listen` address, one listener serves
//! both. Anything else is 404 on either.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::auth::TokenGuard;
use crate::config::{AdminListen, Config, StoreConfig};
use crate::deliver::{DeliverError, Worker};
use crate::health::Health;
use crate::ingest::{self, error_body, Ingest};
use crate::pipeline::{self, Engine, EngineError, Pipeline, SharedEngine};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Server(std::io::Error),
    #[error("cannot start CRM delivery: {0}")]
    Deliver(#[from] DeliverError),
    #[error("mappings or rules are invalid: {0}")]
    Engine(#[from] EngineError),
}

/// A built, bound, not yet running leadgate.
pub struct Application {
    port: u16,
    admin_port: u16,
    /// The public server, and the operator one unless they share a listener.
    servers: Vec<Server>,
    store: Arc<dyn Store>,
    stopper: Stopper,
    workers: JoinSet<()>,
    /// Wakes the delivery worker after an enqueue (it also polls).
    delivery_wake: Arc<Notify>,
    engine: SharedEngine,
}

/// How often mapping and rules files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Starts a graceful shutdown from outside (signals, tests).
#[derive(Clone)]
pub struct Stopper {
    servers: Vec<ServerHandle>,
    draining: Arc<AtomicBool>,
    drain: Duration,
    cancel: CancellationToken,
}

impl Stopper {
    /// Turns readiness off, waits the drain delay, then stops accepting on every listener at
    /// once and lets in-flight requests finish; background workers stop after their current step.
    pub async fn stop(&self) {
        if self.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(drain_secs = self.drain.as_secs(), "shutting down");
        tokio::time::sleep(self.drain).await;
        futures_util::future::join_all(self.servers.iter().map(|s| s.stop(true))).await;
        self.cancel.cancel();
    }
}

/// Where file-based side outputs live (`dry-run` requests): the directory of the SQLite
/// database, or `data/` beside the settings file with PostgreSQL.
pub fn data_dir(config: &Config) -> std::path::PathBuf {
    match &config.store {
        StoreConfig::Sqlite { path } => path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.to_path_buf())
            .unwrap_or_else(|| std::path::PathBuf::from(".")),
        StoreConfig::Postgres { .. } => config.base_dir.join("data"),
    }
}

/// Opens the configured store (and brings its schema up to date).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    match &config.store {
        StoreConfig::Sqlite { path } => Ok(Arc::new(SqliteStore::open(path)?)),
        StoreConfig::Postgres { url, .. } => Ok(Arc::new(PgStore::open(url.expose()).await?)),
    }
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let store = open_store(&config).await?;
        Self::build_with_store(config, store).await
    }

    pub async fn build_with_store(
        config: Config,
        store: Arc<dyn Store>,
    ) -> Result<Application, StartupError> {
        telemetry::metrics();
        let engine: SharedEngine =
            Arc::new(arc_swap::ArcSwap::from_pointee(Engine::load(&config)?));
        pipeline::report_versions(&engine.load(), None);
        let (public_listener, port) = bind(config.server.listen)?;
        let admin_listener = match config.server.admin_listen {
            AdminListen::Own(addr) => Some(bind(addr)?),
            AdminListen::SameAsPublic => None,
        };
        let admin_port = admin_listener.as_ref().map_or(port, |(_, p)| *p);

        let events_waiting = Arc::new(Notify::new());
        let draining = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let ingest = web::Data::new(Ingest::new(
            &config.sources,
            Arc::clone(&store),
            Arc::clone(&events_waiting),
        ));
        let health = web::Data::new(Health {
            store: Arc::clone(&store),
            draining: Arc::clone(&draining),
            engine: Arc::clone(&engine),
        });
        let delivery = Worker::new(&config.crm, Arc::clone(&store), &data_dir(&config))?;
        let delivery_wake = delivery.waker();
        let admin = config.admin.token.clone().map(|token| {
            web::Data::new(Admin {
                auth: TokenGuard::new(token, config.admin.wrong_token_limit),
                store: Arc::clone(&store),
                engine: Arc::clone(&engine),
                pipeline_wake: Arc::clone(&events_waiting),
                delivery_wake: Arc::clone(&delivery_wake),
            })
        });

        let public = PublicRoutes { ingest, health };
        let operator = OperatorRoutes { admin };
        let shutdown = config.server.shutdown_timeout;
        let servers = match admin_listener {
            Some((admin_listener, _)) => vec![
                serve(public_listener, config.server.workers, shutdown, {
                    let public = public.clone();
                    move |c| public.configure(c)
                })?,
                // Operator traffic is a few requests a minute: one worker thread.
                serve(admin_listener, Some(1), shutdown, {
                    let health = public.health.clone();
                    move |c| {
                        c.app_data(health.clone());
                        crate::health::routes(c);
                        operator.configure(c);
                    }
                })?,
            ],
            None => vec![serve(
                public_listener,
                config.server.workers,
                shutdown,
                move |c| {
                    public.configure(c);
                    operator.configure(c);
                },
            )?],
        };

        let mut workers = JoinSet::new();
        workers.spawn(delivery.run(cancel.clone()));
        let pipeline = Pipeline::new(
            Arc::clone(&store),
            Arc::clone(&engine),
            Arc::new(config.crm.clone()),
            config.pipeline.clone(),
            Arc::clone(&events_waiting),
            Arc::clone(&delivery_wake),
        );
        workers.spawn(pipeline.run(cancel.clone()));
        workers.spawn(pipeline::watch(
            config.clone(),
            Arc::clone(&engine),
            RELOAD_CHECK,
            cancel.clone(),
        ));
        let stopper = Stopper {
            servers: servers.iter().map(Server::handle).collect(),
            draining,
            drain: config.server.drain,
            cancel,
        };
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(
            port,
            admin_port,
            sources = config.sources.len(),
            crm = config.crm.kind.as_str(),
            config = %config.origin,
            rules_version = engine.load().rules.version(),
            "leadgate listening"
        );
        Ok(Application {
            port,
            admin_port,
            servers,
            store,
            stopper,
            workers,
            delivery_wake,
            engine,
        })
    }

    /// The mappings and rules in use (swapped on reload).
    pub fn engine(&self) -> SharedEngine {
        Arc::clone(&self.engine)
    }

    /// The public listener's port (webhooks, probes).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The operator listener's port (metrics, admin API); the public port when they share one.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Notify after enqueueing CRM updates so delivery starts without waiting for its poll.
    pub fn delivery_waker(&self) -> Arc<Notify> {
        Arc::clone(&self.delivery_wake)
    }

    /// Runs until SIGTERM/SIGINT (or [`Stopper::stop`]), then shuts down in order.
    pub async fn run_until_stopped(mut self) -> Result<(), StartupError> {
        let stopper = self.stopper.clone();
        let signals = tokio::spawn(async move {
            wait_for_signal().await;
            stopper.stop().await;
        });
        // Each server on its own task: a server only makes progress (stopping included) while
        // it is polled, and this task waits on the stopper below.
        let mut running: FuturesUnordered<_> = self.servers.into_iter().map(tokio::spawn).collect();
        let mut served = Ok(());
        while let Some(result) = running.next().await {
            let result = result.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if served.is_ok() {
                served = result;
            }
            // A listener that stops on its own (an I/O failure) takes the other one with it, in
            // the usual order; after a signal this is a no-op.
            self.stopper.stop().await;
        }
        signals.abort();
        self.stopper.cancel.cancel();
        while self.workers.join_next().await.is_some() {}
        self.store.close().await?;
        tracing::info!("stopped");
        served.map_err(StartupError::Server)
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot listen for signals; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What form providers and load balancers reach.
#[derive(Clone)]
struct PublicRoutes {
    ingest: web::Data<Ingest>,
    health: web::Data<Health>,
}

impl PublicRoutes {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.ingest.clone())
            .app_data(self.health.clone());
        ingest::routes(cfg);
        crate::health::routes(cfg);
    }
}

/// What operators reach, only on the operator listener (or on the shared one). Operator routes
/// added later (the console) mount here, and nowhere else.
#[derive(Clone)]
struct OperatorRoutes {
    /// None: no admin token is set, so `/admin/*` stays unrouted (404).
    admin: Option<web::Data<Admin>>,
}

impl OperatorRoutes {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        // Its queue gauges are read from the store: Health is on every listener that mounts this.
        cfg.route("/metrics", web::get().to(crate::health::metrics));
        if let Some(a) = &self.admin {
            admin::routes(cfg, a.clone());
        }
    }
}

fn bind(addr: SocketAddr) -> Result<(TcpListener, u16), StartupError> {
    let err = |source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(err)?;
    let port = listener.local_addr().map_err(err)?.port();
    Ok((listener, port))
}

/// One HTTP server on `listener` serving `routes`, with request logging and a JSON 404 for
/// everything else.
fn serve<F>(
    listener: TcpListener,
    workers: Option<usize>,
    shutdown_timeout: Duration,
    routes: F,
) -> Result<Server, StartupError>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(telemetry::request_span))
            .configure(routes.clone())
            .default_service(web::to(not_found))
    })
    .disable_signals()
    .shutdown_timeout(shutdown_timeout.as_secs());
    if let Some(n) = workers {
        server = server.workers(n);
    }
    Ok(server
        .listen(listener)
        .map_err(|source| StartupError::Bind { addr, source })?
        .run())
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(error_body("not_found", "no such endpoint"))
}
