//! Shared helpers of the sink tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use bytes::Bytes;
use etcd_standby_client::{Client, ClientConfig, pb};
use etcd_standby_model::Effect;
use etcd_standby_sink::{KeyMap, Sink, SinkConfig};
use etcd_standby_testkit::{ClusterOptions, EtcdCluster, EtcdVersion};

pub const CLUSTER_ID: u64 = 0xabc;

pub type Batch = Vec<(u64, u64, Vec<Effect>)>;

pub fn start(version: EtcdVersion) -> EtcdCluster {
    EtcdCluster::start(version, 1, ClusterOptions::default()).expect("start etcd")
}

pub fn config(cluster: &EtcdCluster, keys: KeyMap) -> SinkConfig {
    let mut cfg = SinkConfig::new(ClientConfig::new(cluster.client_urls()), CLUSTER_ID);
    cfg.keys = keys;
    cfg
}

pub async fn sink(cluster: &EtcdCluster) -> Sink {
    Sink::connect(config(cluster, KeyMap::new()))
        .await
        .expect("connect sink")
}

pub async fn client(cluster: &EtcdCluster) -> Client {
    Client::connect(ClientConfig::new(cluster.client_urls()))
        .await
        .expect("connect client")
}

pub fn put(key: &str, value: &str) -> Effect {
    Effect::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        lease: 0,
    }
}

pub fn put_lease(key: &str, value: &str, lease: i64) -> Effect {
    Effect::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        lease,
    }
}

pub fn del(key: &str) -> Effect {
    Effect::Delete {
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

pub async fn get(c: &Client, key: &str) -> Option<etcd_standby_client::KeyValue> {
    c.range(pb::RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    })
    .await
    .unwrap()
    .kvs
    .into_iter()
    .next()
}

pub async fn count_prefix(c: &Client, prefix: &str) -> i64 {
    c.range(pb::RangeRequest {
        key: Bytes::copy_from_slice(prefix.as_bytes()),
        range_end: etcd_standby_client::prefix_end(prefix.as_bytes()).into(),
        count_only: true,
        ..Default::default()
    })
    .await
    .unwrap()
    .count
}

pub async fn keys_prefix(c: &Client, prefix: &str) -> Vec<String> {
    c.range(pb::RangeRequest {
        key: Bytes::copy_from_slice(prefix.as_bytes()),
        range_end: etcd_standby_client::prefix_end(prefix.as_bytes()).into(),
        keys_only: true,
        ..Default::default()
    })
    .await
    .unwrap()
    .kvs
    .into_iter()
    .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
    .collect()
}

/// Version (number of puts) of the checkpoint key: one per write txn.
pub async fn checkpoint_version(c: &Client, sink: &Sink) -> i64 {
    c.range(pb::RangeRequest {
        key: sink.checkpoint_key().clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .kvs
    .first()
    .map_or(0, |kv| kv.version)
}

/// Runs a test body on 3.4.23 and on 3.5.1.
#[macro_export]
macro_rules! both_versions {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn v3_4() {
                super::$name(etcd_standby_testkit::EtcdVersion::V3_4).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn v3_5() {
                super::$name(etcd_standby_testkit::EtcdVersion::V3_5).await;
            }
        }
    };
}
