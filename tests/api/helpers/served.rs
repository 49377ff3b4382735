//! The app on a real TCP socket, for the tests that need one.

#![allow(unused_imports)]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tower::ServiceExt;
use uuid::Uuid;

use lakehouse_api::app::{self, HttpLimits};
use lakehouse_api::platform::auth::{Authenticator, Claims, JwtKeys};
use lakehouse_api::platform::config::{
    HttpConfig, PiiKeys, Rate, RateLimitConfig, Secret, TokenConfig,
};
use lakehouse_api::platform::db;
use lakehouse_api::platform::pii::PiiCipher;
use lakehouse_api::platform::server::ConnectionLimits;
use lakehouse_api::platform::state::AppState;
use lakehouse_cluster::TempCluster;

use super::*;

/// The app served on a real TCP socket on loopback, with hyper's timers, until dropped.
pub struct Served {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn serve_tcp(
        &self,
        limits: lakehouse_api::platform::server::ConnectionLimits,
    ) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = self.router.clone();
        let task = tokio::spawn(lakehouse_api::platform::server::serve(
            listener,
            router,
            limits,
            async move {
                let _ = stopped.await;
            },
        ));
        Served {
            addr,
            stop: Some(stop),
            task,
        }
    }
}

impl Served {
    /// Signals shutdown; the task ends when connections have closed or the deadline passed.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
