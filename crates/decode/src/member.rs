//! The one cluster-member type of the workspace.

use serde::{Deserialize, Serialize};

/// A cluster member as etcd's membership store writes it (conf-change
/// contexts, the `members` bucket, the v2 store).
///
/// The serde names are etcd's JSON (`id`, `peerURLs`, `name`, `clientURLs`,
/// `isLearner`); everything but `id` may be absent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Member {
    /// Member ID.
    pub id: u64,
    /// Peer URLs (where other members dial it; dialled in turn after failures).
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    /// Published name (empty until the member publishes its attributes, or
    /// from the add context).
    #[serde(default)]
    pub name: String,
    /// Published client URLs (3.5.1 never writes them to the backend).
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    /// Whether the member is a learner.
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn etcd_json_names() {
        let m: Member = serde_json::from_str(
            r#"{"id":10501334649042878790,"peerURLs":["http://127.0.0.1:2380"],"name":"n1","clientURLs":["http://127.0.0.1:2379"],"isLearner":true}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            Member {
                id: 10501334649042878790,
                peer_urls: vec!["http://127.0.0.1:2380".into()],
                name: "n1".into(),
                client_urls: vec!["http://127.0.0.1:2379".into()],
                is_learner: true,
            }
        );
        let back: Member = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn only_id_is_required() {
        let m: Member = serde_json::from_str(r#"{"id":7,"peerURLs":["http://a:2380"]}"#).unwrap();
        assert_eq!(m.id, 7);
        assert_eq!(m.name, "");
        assert!(m.client_urls.is_empty());
        assert!(!m.is_learner);
        assert!(serde_json::from_str::<Member>(r#"{"peerURLs":[]}"#).is_err());
    }
}
