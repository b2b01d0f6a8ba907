//! Prometheus metrics of the peer transport (prometheus-client typed metrics).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Label set `{stream="msgapp"|"message"|"pipeline"|"snapshot"}`.
pub type StreamLabels = Vec<(&'static str, &'static str)>;

pub(crate) type CounterFamily = Family<StreamLabels, Counter>;

/// Counters kept by the transport. Cheap to clone (counters are shared handles).
#[derive(Debug, Clone)]
pub struct PeerMetrics {
    /// `etcd_standby_peer_bytes_received_total`: body bytes read from peers.
    pub bytes_received: Counter,
    /// `etcd_standby_peer_messages_received_total{stream}`: raft messages received
    /// (link heartbeats excluded).
    pub messages_received: Family<StreamLabels, Counter>,
    /// `etcd_standby_peer_messages_sent_total{stream}`: raft messages written to a
    /// stream or successfully POSTed.
    pub messages_sent: Family<StreamLabels, Counter>,
    /// `etcd_standby_peer_stream_reconnects_total`: failed/ended stream dials.
    pub stream_reconnects: Counter,
    /// `etcd_standby_peer_snapshots_received_total`: snapshots handed to the daemon.
    pub snapshots_received: Counter,
    /// `etcd_standby_peer_send_dropped_total`: outgoing messages dropped
    /// (queue full, no route, or a failed POST).
    pub send_dropped: Counter,
}

pub(crate) fn label(stream: &'static str) -> StreamLabels {
    vec![("stream", stream)]
}

impl Default for PeerMetrics {
    /// All counters at zero, with every `stream` label value present from the
    /// start (so dashboards see zeros instead of missing series).
    fn default() -> Self {
        let m = Self {
            bytes_received: Counter::default(),
            messages_received: Family::default(),
            messages_sent: Family::default(),
            stream_reconnects: Counter::default(),
            snapshots_received: Counter::default(),
            send_dropped: Counter::default(),
        };
        for s in ["msgapp", "message", "pipeline", "snapshot"] {
            let _ = m.messages_received.get_or_create(&label(s));
        }
        for s in ["msgapp", "message", "pipeline"] {
            let _ = m.messages_sent.get_or_create(&label(s));
        }
        m
    }
}

impl PeerMetrics {
    /// Registers every metric under its `etcd_standby_peer_*` name.
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "etcd_standby_peer_bytes_received",
            "Body bytes received from peers",
            self.bytes_received.clone(),
        );
        reg.register(
            "etcd_standby_peer_messages_received",
            "Raft messages received, by stream (link heartbeats excluded)",
            self.messages_received.clone(),
        );
        reg.register(
            "etcd_standby_peer_messages_sent",
            "Raft messages sent, by stream",
            self.messages_sent.clone(),
        );
        reg.register(
            "etcd_standby_peer_stream_reconnects",
            "Stream dials that failed or ended and were retried",
            self.stream_reconnects.clone(),
        );
        reg.register(
            "etcd_standby_peer_snapshots_received",
            "Snapshots received and handed to the daemon",
            self.snapshots_received.clone(),
        );
        reg.register(
            "etcd_standby_peer_send_dropped",
            "Outgoing raft messages dropped",
            self.send_dropped.clone(),
        );
    }

    pub(crate) fn received(&self, stream: &'static str) {
        self.messages_received.get_or_create(&label(stream)).inc();
    }

    pub(crate) fn sent(&self, stream: &'static str) {
        self.messages_sent.get_or_create(&label(stream)).inc();
    }
}
