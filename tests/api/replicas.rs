//! Reads on a real hot standby (`pg_basebackup -R`, streaming from a cluster of the test's own)
//! whose replay is held back (`recovery_min_apply_delay`): what runs there, read-your-writes
//! through the consistency token, row-level security there, and the standby going away.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};

use sqlx::postgres::PgPoolOptions;

use lakehouse_api::app::{self, HttpLimits};
use lakehouse_api::platform::auth::{Claims, JwtKeys};
use lakehouse_api::platform::config::{HttpConfig, ReplicaPolicy, Secret};
use lakehouse_api::platform::db::{self, replicas::ReplicaSet};
use lakehouse_api::platform::pii::PiiCipher;
use lakehouse_api::platform::state::AppState;
use lakehouse_cluster::TempCluster;

use crate::helpers::{
    pii_keys, send_via, unlimited, OwnCluster, TestResponse, JWT_SECRET, OWN_CLUSTER_APP_PASSWORD,
};

const APPLY_DELAY: Duration = Duration::from_secs(3);

struct Reader {
    router: axum::Router,
    keys: JwtKeys,
}

impl Reader {
    fn token(&self, role: &str, customer: Option<&str>) -> String {
        self.keys.sign(&Claims {
            sub: format!("replica-{role}-{}", customer.unwrap_or("x")),
            role: role.into(),
            customer_id: customer.map(|c| c.parse().unwrap()),
            exp: chrono::Utc::now().timestamp() + 600,
            iat: None,
            branch: Some("HO".into()),
        })
    }

    async fn get(&self, path: &str, token: &str, consistency: Option<&str>) -> TestResponse {
        let headers: Vec<(&str, &str)> = consistency
            .map(|t| ("consistency-token", t))
            .into_iter()
            .collect();
        self.send(Method::GET, path, token, None, &headers).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        send_via(&self.router, request.body(body).unwrap()).await
    }
}

impl Reader {
    /// A 1,000 repayment on `loan` by its customer (`token`): the write's consistency token and
    /// the payment's path.
    async fn pay(&self, token: &str, loan: &Value, key: &str) -> (String, String) {
        let paid = self
            .send(
                Method::POST,
                "/v1/payments",
                token,
                Some(json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": "1000.00"})),
                &[("idempotency-key", key)],
            )
            .await;
        assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
        let consistency = paid
            .header("consistency-token")
            .expect("a write's response carries its consistency token")
            .to_owned();
        let payment = format!(
            "/v1/payments/{}",
            paid.json()["payment_id"].as_str().unwrap()
        );
        (consistency, payment)
    }
}

fn reads(replicas: &ReplicaSet) -> u64 {
    replicas.status()[0].reads
}

/// A hot standby of `own` with server `options`, removed when the tests end.
fn standby_of(own: &OwnCluster, options: &str) -> TempCluster {
    let standby = TempCluster::standby_of(&own.cluster, options).expect("a hot standby");
    standby
        .remove_when_process_exits(std::process::id())
        .expect("a watchdog for the standby");
    standby
}

/// The service over `own` (the primary) and `standby` (its one replica), for `database`.
fn serve_reads(
    own: &OwnCluster,
    standby: &TempCluster,
    database: &str,
    policy: ReplicaPolicy,
) -> (Reader, std::sync::Arc<ReplicaSet>) {
    let login = |options: sqlx::postgres::PgConnectOptions| {
        options
            .username(db::AUTHENTICATOR_ROLE)
            .password(OWN_CLUSTER_APP_PASSWORD)
    };
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with(login(own.owner.clone()));
    let replica_options: sqlx::postgres::PgConnectOptions = standby.url(database).parse().unwrap();
    let replicas = ReplicaSet::new(
        pool.clone(),
        vec![login(replica_options)],
        policy,
        4,
        lakehouse_api::platform::db::consistency_token::TokenSeal::new(&[3; 32]),
    );
    let keys = JwtKeys::new(Secret::new(JWT_SECRET.as_bytes().to_vec()));
    let http = HttpConfig {
        rate_limits: unlimited(),
        ..HttpConfig::default()
    };
    let state = AppState::new(
        pool,
        keys.clone(),
        PiiCipher::new(&pii_keys()),
        Duration::from_secs(5),
        &http,
    )
    .with_replicas(replicas.clone());
    let reader = Reader {
        router: app::router(state, HttpLimits::from_config(&http)),
        keys,
    };
    (reader, replicas)
}

#[tokio::test]
async fn a_replica_serves_reads_with_read_your_writes_and_rls_and_its_loss_costs_no_read() {
    let Some(own) =
        OwnCluster::start("replicas", Duration::from_secs(5), Duration::from_secs(10)).await
    else {
        return;
    };
    let mine = own.disbursed_loan("REPA01", "500500501").await;
    let theirs = own.disbursed_loan("REPB01", "500500502").await;
    let (me, them) = (
        mine["customer_id"].as_str().unwrap().to_owned(),
        theirs["customer_id"].as_str().unwrap().to_owned(),
    );
    let standby = standby_of(
        &own,
        &format!("-c recovery_min_apply_delay={}ms", APPLY_DELAY.as_millis()),
    );

    let policy = ReplicaPolicy {
        max_lag: Duration::from_secs(60),
        wait: Duration::from_millis(300),
        poll: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
    };
    let (reader, replicas) = serve_reads(&own, &standby, "replicas", policy);
    let my_token = reader.token("customer", Some(&me));
    let their_token = reader.token("customer", Some(&them));
    let my_loan = format!("/v1/loans/{}", mine["loan_id"].as_str().unwrap());

    // Reads without a token run on the replica once it is up (it has the loans: they committed
    // well before the standby was made).
    let started = Instant::now();
    loop {
        let before = reads(&replicas);
        let read = reader.get(&my_loan, &my_token, None).await;
        if read.status == StatusCode::OK && reads(&replicas) == before + 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the replica never served a read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = &replicas.status()[0];
    assert!(status.up && status.replayed > 0, "{status:?}");

    // Row-level security holds there: another customer's loan does not exist for them, and
    // their list is their own.
    let before = reads(&replicas);
    reader
        .get(&my_loan, &their_token, None)
        .await
        .problem(StatusCode::NOT_FOUND);
    let listed = reader.get("/v1/loans", &their_token, None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json()["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed.json()["data"][0]["loan_id"], theirs["loan_id"]);
    assert_eq!(
        reads(&replicas),
        before + 2,
        "both reads ran on the replica"
    );

    // Read-your-writes: a payment, then at once its reads. Without the token the replica (3 s
    // behind) does not have it yet; with it, the read runs on the primary at once (the replica
    // is further behind than the 300 ms it could wait), and sees it.
    let (token, payment) = reader.pay(&my_token, &mine, "replica-ryw-1").await;
    reader
        .get(&payment, &my_token, None)
        .await
        .problem(StatusCode::NOT_FOUND);
    let fallbacks = replicas.fallbacks();
    let seen = reader.get(&payment, &my_token, Some(&token)).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.text());
    let listed = reader
        .get(&format!("{my_loan}/payments"), &my_token, Some(&token))
        .await;
    assert!(listed
        .text()
        .contains(seen.json()["payment_id"].as_str().unwrap()));
    assert_eq!(
        replicas.fallbacks(),
        fallbacks + 2,
        "both went to the primary"
    );

    // Once the replica has replayed the write (after the apply delay, and whatever a busy
    // machine adds), a read with the token runs there, and finds it.
    tokio::time::sleep(APPLY_DELAY).await;
    let started = Instant::now();
    loop {
        let before = reads(&replicas);
        let later = reader.get(&payment, &my_token, Some(&token)).await;
        assert_eq!(later.status, StatusCode::OK, "{}", later.text());
        if reads(&replicas) == before + 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the replica never reached the token: {:?}",
            replicas.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replicas.status()[0].replayed >= replicas.position(&token).unwrap());
    // A made-up or edited token is 400 at once, with no wait for a replica; a bare WAL
    // position is not a token, and a token reveals nothing (the same position seals anew).
    let position = replicas.position(&token).unwrap();
    let mut edited = token.clone().into_bytes();
    edited[5] = if edited[5] == b'A' { b'B' } else { b'A' };
    for forged in [
        "soon".to_owned(),
        format!("{:X}/{:X}", position >> 32, position & 0xFFFF_FFFF),
        String::from_utf8(edited).unwrap(),
    ] {
        let started = Instant::now();
        reader
            .get(&payment, &my_token, Some(&forged))
            .await
            .problem(StatusCode::BAD_REQUEST);
        assert!(started.elapsed() < Duration::from_millis(250), "{forged}");
    }
    assert_ne!(replicas.token(position), replicas.token(position));

    // The replica goes away: every read still answers, from the primary.
    standby.stop().expect("stop the standby");
    let fallbacks = replicas.fallbacks();
    for _ in 0..10 {
        let read = reader.get(&my_loan, &my_token, None).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text());
        let read = reader.get(&payment, &my_token, Some(&token)).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    }
    assert!(replicas.fallbacks() > fallbacks);
    assert!(!replicas.status()[0].up);
}

/// Every process of a cluster: its postmaster (the data directory's `postmaster.pid`) and the
/// postmaster's children.
fn cluster_processes(cluster: &TempCluster) -> Vec<String> {
    let pid_file = std::fs::read_to_string(cluster.data_path().join("postmaster.pid")).unwrap();
    let postmaster = pid_file.lines().next().unwrap().trim().to_owned();
    let children = std::process::Command::new("pgrep")
        .args(["-P", &postmaster])
        .output()
        .expect("pgrep");
    let mut pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    pids.push(postmaster);
    pids
}

fn signal(pids: &[String], signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids)
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pids:?}");
}

/// Requests that began a transaction on `cluster`, by its statement log (every request's
/// transaction sets its role; the poller's readings do not).
fn requests_logged(cluster: &TempCluster) -> usize {
    cluster.log().matches("SET LOCAL ROLE").count()
}

async fn timed(reader: &Reader, path: &str, token: &str, consistency: Option<&str>) -> Duration {
    let started = Instant::now();
    let read = reader.get(path, token, consistency).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    started.elapsed()
}

/// A counter's value in the process's metrics (shared by every test: labels tell them apart).
fn scraped(series: &str) -> f64 {
    let text = lakehouse_api::platform::telemetry::metrics_recorder()
        .expect("the metrics recorder")
        .render();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn a_sick_replica_makes_reads_a_little_slower_never_wrong_or_stuck() {
    let Some(own) = OwnCluster::start(
        "sick_replicas",
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .await
    else {
        return;
    };
    let mine = own.disbursed_loan("SICK01", "500500511").await;
    let me = mine["customer_id"].as_str().unwrap().to_owned();
    let standby = standby_of(&own, "-c log_statement=all");
    let policy = ReplicaPolicy {
        max_lag: Duration::from_secs(5),
        wait: Duration::from_millis(1_000),
        poll: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
    };
    let (reader, replicas) = serve_reads(&own, &standby, "sick_replicas", policy);
    let my_token = reader.token("customer", Some(&me));
    let my_loan = format!("/v1/loans/{}", mine["loan_id"].as_str().unwrap());
    let replica_reads = |replicas: &ReplicaSet| replicas.status()[0].reads;

    // Healthy: reads run there.
    let started = Instant::now();
    while replica_reads(&replicas) == 0 {
        timed(&reader, &my_loan, &my_token, None).await;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the replica never served a read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A read right after a write waits for the replica to replay it (the poller reads at once
    // for it), and runs there.
    let (token, payment) = reader.pay(&my_token, &mine, "sick-ryw-1").await;
    let before = replica_reads(&replicas);
    timed(&reader, &payment, &my_token, Some(&token)).await;
    assert_eq!(
        replica_reads(&replicas),
        before + 1,
        "the token read ran on the replica"
    );

    // Frozen (SIGSTOP, as a blackholed host): no read takes longer than the replica timeout and
    // a read on the primary, none fails; after SIGCONT the replica serves again.
    let frozen = cluster_processes(&standby);
    signal(&frozen, "STOP");
    let mut slowest = Duration::ZERO;
    for _ in 0..8 {
        slowest = slowest.max(timed(&reader, &my_loan, &my_token, None).await);
        slowest = slowest.max(timed(&reader, &payment, &my_token, Some(&token)).await);
    }
    signal(&frozen, "CONT");
    assert!(
        slowest < Duration::from_millis(1_500),
        "a read took {slowest:?} on a frozen replica"
    );
    let name = format!("127.0.0.1:{}", standby.port());
    assert!(
        scraped(&format!("replica_timeouts_total{{replica=\"{name}\"}}")) >= 1.0,
        "the timeouts are counted"
    );
    assert!(scraped("replica_fallbacks_total{reason=\"replica_timeout\"}") >= 1.0);
    let started = Instant::now();
    let before = replica_reads(&replicas);
    while replica_reads(&replicas) == before {
        timed(&reader, &my_loan, &my_token, None).await;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the thawed replica never served again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Promoted outside the service: within two poll periods it gets no read, by its own
    // statement log (it logged the reads it served before).
    assert!(
        requests_logged(&standby) > 0,
        "the standby logs the reads it serves"
    );
    standby
        .run_as_owner(
            "pg_ctl",
            &[
                "promote",
                "-w",
                "-D",
                &standby.data_path().display().to_string(),
            ],
        )
        .expect("promote the standby");
    tokio::time::sleep(policy.poll * 2).await;
    let logged = requests_logged(&standby);
    for _ in 0..10 {
        timed(&reader, &my_loan, &my_token, None).await;
        timed(&reader, &payment, &my_token, Some(&token)).await;
    }
    assert_eq!(
        requests_logged(&standby),
        logged,
        "a read ran on the promoted server"
    );
    assert!(!replicas.status()[0].up);
    assert_eq!(
        scraped(&format!(
            "replica_not_in_recovery_total{{replica=\"{name}\"}}"
        )),
        1.0,
        "counted once"
    );

    // Down: a read with a token goes to the primary at once, as one without.
    standby.stop().expect("stop the standby");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        without.push(timed(&reader, &my_loan, &my_token, None).await);
        with.push(timed(&reader, &payment, &my_token, Some(&token)).await);
    }
    let (with, without) = (median(with), median(without));
    assert!(
        with < without + Duration::from_millis(50),
        "with a token {with:?}, without {without:?}"
    );
}
