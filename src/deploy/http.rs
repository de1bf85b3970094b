//! A node's HTTP port (with the `cli` feature, which brings actix-web): `GET /metrics` is the
//! node's metrics in the Prometheus text format, `GET /health` answers 200 with one line on
//! the node's state when it is healthy and 503 with the reason when it is not (see
//! [`MetricsService`]); any other path is 404.
//!
//! The server runs one worker thread; each request becomes a [`Scrape`] or a [`CheckHealth`]
//! to the node's metrics service, which gathers from the node's actors on their own thread.
//! It takes no signals of its own: the node stops it ([`MetricsPort::stop`]).

use std::net::SocketAddr;

use actix::Addr;
use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::actors::metrics::MetricsService;
use crate::messages::metrics::{CheckHealth, Scrape};

/// The content type of the Prometheus text format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";

/// A running HTTP port.
pub struct MetricsPort {
    addr: SocketAddr,
    handle: ServerHandle,
}

impl MetricsPort {
    /// Serves `/metrics` and `/health` of `service` on `socket` (bound already, so a busy
    /// port was reported before the node started). Must run inside an actix system.
    pub fn start(
        socket: std::net::TcpListener,
        service: Addr<MetricsService>,
    ) -> std::io::Result<MetricsPort> {
        let addr = socket.local_addr()?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(service.clone()))
                .route("/metrics", web::get().to(metrics))
                .route("/health", web::get().to(health))
                .default_service(web::to(not_found))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(socket)?
        .run();
        let handle = server.handle();
        actix_rt::spawn(async move {
            if let Err(e) = server.await {
                log::error!("the metrics port {addr} failed: {e}");
            }
        });
        log::info!("metrics and health on http://{addr}/metrics and /health");
        Ok(MetricsPort { addr, handle })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it: the port closes once requests in flight are answered (1 s at most).
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

async fn metrics(service: web::Data<Addr<MetricsService>>) -> HttpResponse {
    match service.send(Scrape).await {
        Ok(page) => HttpResponse::Ok().content_type(METRICS_TYPE).body(page),
        Err(_) => HttpResponse::ServiceUnavailable()
            .content_type(TEXT_TYPE)
            .body("the node is stopping\n"),
    }
}

async fn health(service: web::Data<Addr<MetricsService>>) -> HttpResponse {
    let (status, reason) = match service.send(CheckHealth).await {
        Ok(check) if check.healthy => (StatusCode::OK, check.reason),
        Ok(check) => (StatusCode::SERVICE_UNAVAILABLE, check.reason),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is stopping".into(),
        ),
    };
    HttpResponse::build(status)
        .content_type(TEXT_TYPE)
        .body(format!("{reason}\n"))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type(TEXT_TYPE)
        .body("not found: this port serves GET /metrics and GET /health\n")
}
