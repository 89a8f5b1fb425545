//! The controller: kube-runtime wiring around the reconcile pipeline
//! observe → validate → desired → apply → status.
//!
//! - [`reconcile`]: the pipeline, step by step, and the choice of the next action;
//! - `namespaces`: claiming the tenant's namespaces and retiring them by `deletionPolicy`;
//! - `children`: the kinds kept inside tenant namespaces, their watches, caches and applying;
//! - `guard`: the admission and Admin-tier network layers the cluster enforces;
//! - `status`: conditions from the steps' verdicts, written only when they change;
//! - `context`, `events`, `error`: what the steps share, report and fail with.

mod children;
mod context;
mod detection;
mod drift;
mod error;
mod events;
mod guard;
mod namespaces;
mod reconcile;
mod reports;
mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self as runtime, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tracing::{info, warn};

use crate::api::ImagingTenant;
use crate::api::metadata::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::cloud::Cloud;
use crate::config::Settings;
use crate::metrics::Metrics;
use children::Stores;
use context::Context;

/// Options of the controller loop.
pub(crate) struct RunOptions {
    /// Who publishes the Events.
    pub(crate) reporter: Reporter,
    pub(crate) concurrency: u16,
    pub(crate) resync_interval: Duration,
    pub(crate) tenant_selector: Option<String>,
    /// Ready does not wait for the admission guard.
    pub(crate) allow_unguarded: bool,
    /// The SQS queue of CloudTrail drift events, if any.
    pub(crate) drift_events_queue_url: Option<String>,
    /// The kinds the Admin-tier network layer may use, preferred first.
    pub(crate) network_policy_kinds: Vec<crate::desired::cluster_network::Flavor>,
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first. `ready`
/// turns true once every cache has its first full list.
pub(crate) async fn run(
    client: Client,
    settings: Settings,
    cloud: Cloud,
    metrics: Arc<Metrics>,
    opts: RunOptions,
    ready: tokio::sync::watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (stores, triggers) = Stores::watch(&client, &format!("{MANAGED_BY_LABEL}={MANAGED_BY}"), &metrics);
    let (guard, guard_changed) =
        guard::start(client.clone(), opts.allow_unguarded, opts.network_policy_kinds.clone()).await;

    let tenants: Api<DeserializeGuard<ImagingTenant>> = Api::all(client.clone());
    let mut tenant_watch = watcher::Config::default().any_semantic();
    if let Some(selector) = &opts.tenant_selector {
        tenant_watch = tenant_watch.labels(selector);
    }
    // The tenants' cache keeps no managed fields either (see `children::prune`).
    let (tenant_reader, tenant_writer) = reflector::store();
    let tenant_stream = watcher(tenants, tenant_watch).modify(children::prune).reflect(tenant_writer).applied_objects();
    let controller = Controller::for_stream(tenant_stream, tenant_reader)
        .with_config(ControllerConfig::default().concurrency(opts.concurrency).debounce(Duration::from_millis(500)))
        .reconcile_on(triggers)
        .reconcile_all_on(guard_changed);
    let aws_checks = Arc::new(context::AwsChecks::default());
    let controller = match &opts.drift_events_queue_url {
        Some(url) => {
            let store = controller.store();
            let events = drift::start(
                cloud.sqs(),
                url.clone(),
                settings.operator_role_arn.clone(),
                store,
                aws_checks.clone(),
                metrics.clone(),
            );
            controller.reconcile_on(events)
        }
        None => controller,
    }
    .graceful_shutdown_on(shutdown);

    let main_store = controller.store();
    let tenant_cache = controller.store();
    let caches = stores.clone();
    tokio::spawn(async move {
        if children::synced(&main_store).await && caches.synced().await {
            let _ = ready.send(true);
            info!("caches synced");
        }
    });

    let ctx = Arc::new(
        Context::new(client, settings, cloud, stores, tenant_cache, metrics.clone(), &opts).with(guard, aws_checks),
    );
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| {
            let metrics = metrics.clone();
            async move {
                match res {
                    Err(runtime::Error::QueueError(e)) => {
                        metrics.watch_restarted();
                        warn!(error = %e, "watch failed; restarting it with back-off");
                    }
                    // A child whose tenant is not ours (another shard) or is already gone.
                    Err(runtime::Error::ObjectNotFound(obj)) => {
                        tracing::trace!(%obj, "tenant not in this operator's cache")
                    }
                    Err(e) => tracing::debug!(error = %e, "controller event"),
                    Ok(_) => {}
                }
            }
        })
        .await;
    info!("controller stopped");
}
