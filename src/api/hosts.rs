//! `GET /api/hosts` (docs/cluster.md): the hosts of this host's cluster as the store
//! records them, alive or not; outside a cluster, this host alone.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::ApiState;
use super::dto::{self, HostEntry};
use super::routes::{ApiError, ApiResult, base};
use crate::fsutil::rfc3339_string;

pub async fn hosts(
    State(st): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<dto::Hosts>> {
    let Some(cluster) = st.0.cluster.clone() else {
        let me = st.0.layout.instance.clone().unwrap_or_else(|| "-".into());
        return Ok(axum::Json(dto::Hosts {
            store: None,
            me: me.clone(),
            hosts: vec![HostEntry {
                name: me,
                api_addr: base(&headers).url(""),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: None,
                heartbeat_at: None,
                lease_expires_at: None,
                alive: true,
            }],
        }));
    };
    let pool = cluster.pool.clone();
    let read = tokio::task::spawn_blocking(move || {
        let all = crate::cluster::hosts::all_hosts(&pool)?;
        let live = crate::cluster::hosts::live_hosts(&pool)?;
        Ok::<_, crate::cluster::ClusterError>((all, live))
    })
    .await;
    let (all, live) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(_) => {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the host is stopping".into(),
            ));
        }
    };
    let hosts = all
        .into_iter()
        .map(|h| HostEntry {
            alive: live.iter().any(|l| l.name == h.name),
            name: h.name,
            api_addr: h.api_addr,
            version: h.version,
            started_at: Some(rfc3339_string(h.started_at)),
            heartbeat_at: Some(rfc3339_string(h.heartbeat_at)),
            lease_expires_at: Some(rfc3339_string(h.lease_expires_at)),
        })
        .collect();
    Ok(axum::Json(dto::Hosts {
        store: Some(cluster.pool.url().to_string()),
        me: cluster.me.name.clone(),
        hosts,
    }))
}
