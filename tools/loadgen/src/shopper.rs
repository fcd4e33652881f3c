//! What a shopper does: sign up, top up, then order in a loop.
//!
//! Each order is followed to its final status by polling, as a client
//! without SSE would; the time from the 202 to the final status is recorded
//! as `orders.settle`, the figure that shows the saga's end-to-end latency.
//! Some confirmed orders are cancelled again, exercising the refund path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::IndexedRandom;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{CallError, Product, Session, Shop};
use crate::config::Config;
use crate::report::Recorder;

/// Products with stock that shoppers pick from.
#[derive(Debug)]
pub struct Catalogue {
    pub products: Vec<Product>,
}

/// Why the run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "the catalogue has no product in stock; set LOADGEN_ADMIN_EMAIL to an administrator so loadgen can create some"
    )]
    EmptyCatalogue,
    #[error("{0}")]
    Call(#[from] CallError),
}

/// How many products loadgen creates for its run, given an administrator.
const CREATED_PRODUCTS: usize = 10;
/// Stock of each product it creates.
const CREATED_STOCK: i64 = 1_000_000;
/// How often an order's status is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The products shoppers order. With an administrator, a catalogue of the
/// run's own with plenty of stock, so that stock-outs of a small seeded
/// catalogue do not turn the run into one of rejections; without one, what
/// is in stock now.
pub async fn prepare_catalogue(shop: &Shop, config: &Config) -> Result<Catalogue, SetupError> {
    let mut session = Session::new(shop.clone());
    let Some(admin) = &config.admin_email else {
        let products = session.products_in_stock().await?;
        return if products.is_empty() {
            Err(SetupError::EmptyCatalogue)
        } else {
            Ok(Catalogue { products })
        };
    };
    session.sign_in(admin, &config.admin_password).await?;
    let run = Uuid::now_v7().simple().to_string();
    let mut products = Vec::with_capacity(CREATED_PRODUCTS);
    for index in 0..CREATED_PRODUCTS {
        let sku = format!("LOAD-{}-{index}", &run[run.len() - 8..]);
        let price = 100 * rand::rng().random_range(1..=50);
        products.push(
            session
                .create_product(&sku, price, &config.currency, CREATED_STOCK)
                .await?,
        );
    }
    Ok(Catalogue { products })
}

/// One simulated customer.
#[derive(Debug)]
pub struct Shopper {
    index: u32,
    session: Session,
    config: Arc<Config>,
    catalogue: Arc<Catalogue>,
}

impl Shopper {
    pub fn new(index: u32, shop: Shop, config: Arc<Config>, catalogue: Arc<Catalogue>) -> Self {
        Self {
            index,
            session: Session::new(shop),
            config,
            catalogue,
        }
    }

    /// Registers, logs in, waits for the wallet (opened asynchronously after
    /// registration) and tops it up.
    pub async fn set_up(mut self) -> Result<Self, CallError> {
        let run = Uuid::now_v7().simple().to_string();
        let email = format!("shopper-{}-{run}@loadgen.ferrishop.dev", self.index);
        self.session
            .sign_in(&email, "loadgen-shopper-password")
            .await?;
        let deadline = Instant::now() + self.config.settle_timeout;
        while !self.session.has_wallet().await? && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let key = format!("loadgen-deposit-{run}");
        self.session
            .deposit(self.config.deposit, &self.config.currency, &key)
            .await?;
        Ok(self)
    }

    /// Orders until `stop` fires; returns what was measured.
    pub async fn run(mut self, stop: CancellationToken) -> Recorder {
        while !stop.is_cancelled() {
            if let Err(error) = self.one_order(&stop).await {
                log_failure(&error);
            }
            if !self.config.think_time.is_zero() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(self.config.think_time) => {}
                }
            }
        }
        self.session.recorder
    }

    async fn one_order(&mut self, stop: &CancellationToken) -> Result<(), CallError> {
        let items = self.basket();
        if let Some((product, quantity)) = items.first() {
            self.session.quote(product, *quantity).await?;
        }
        let placed = self
            .session
            .place_order(&items, &Uuid::now_v7().to_string())
            .await?;
        let status = self
            .settle(&placed.id, &["CONFIRMED", "REJECTED"], stop)
            .await?;
        if status == "CONFIRMED" && rand::rng().random_bool(self.config.cancel_ratio) {
            self.session.cancel(&placed.id).await?;
            self.settle(&placed.id, &["CANCELLED"], stop).await?;
        }
        Ok(())
    }

    /// One to three distinct products, one to three of each.
    fn basket(&self) -> Vec<(String, u32)> {
        let mut rng = rand::rng();
        let count = rng.random_range(1..=3).min(self.catalogue.products.len());
        self.catalogue
            .products
            .choose_multiple(&mut rng, count)
            .map(|product| (product.id.clone(), rng.random_range(1..=3)))
            .collect()
    }

    /// Polls the order until it has one of `finals`; records the outcome
    /// and how long it took.
    async fn settle(
        &mut self,
        id: &str,
        finals: &[&str],
        stop: &CancellationToken,
    ) -> Result<String, CallError> {
        let started = Instant::now();
        let deadline = started + self.config.settle_timeout;
        loop {
            let order = self.session.order(id).await?;
            if finals.contains(&order.status.as_str()) {
                self.session
                    .recorder
                    .succeeded("orders.settle", started.elapsed());
                self.session.recorder.outcome(&order.status);
                return Ok(order.status);
            }
            if Instant::now() >= deadline || stop.is_cancelled() {
                if !stop.is_cancelled() {
                    self.session.recorder.outcome("STUCK");
                }
                return Ok(order.status);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Failures are counted in the report; one line per failure on stderr
/// helps while watching a run.
fn log_failure(error: &CallError) {
    eprintln!("loadgen: {error}");
}
