//! Redis Cluster lookups sent straight to the master of their group: the
//! store's own connections to each master (`pipe/`), picked by the group's
//! slot in fred's cached view of the cluster (`cached_cluster_state`).
//!
//! # Performance
//! A fred cluster client checks every script's keys against the slot map
//! under a lock, routes the call by slot through a map of connections, and
//! on each wake-up polls the connections to every master, so each pooled
//! client's 3 connections (one per master) each carried a third of its
//! calls (issue #18). On a 3-master cluster at 8 clients a hit cost the
//! pgstash process 70.5k instructions against 65.1k on one Redis (callgrind,
//! `bench/hits`), and more read and `epoll_wait` calls. A plain client has
//! one connection and none of that routing; the store's own connections
//! (as on one Redis) spare fred's encoding and router task too.
//!
//! The guarantees do not depend on the view being right: a master answers a
//! script only over slots it serves. Sent to a node that no longer serves
//! the group (a migrated slot, a failover), the call is answered `MOVED` or
//! `ASK`, fails as a refused call does (the query goes upstream), and the
//! cluster client is asked to relearn the slots; the next refresh (every
//! 200 ms, `mod.rs`) routes the group anew. A master's connections mark
//! the store dirty when they fail or come back, as the cluster clients'
//! events do (`dirt.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fred::prelude::*;
use fred::types::config::Server;

use super::dirt::Marks;
use super::pipe::{Endpoint, Pipes};

/// How long a new master's connections may take to come up before its
/// groups stay on the cluster clients until the next refresh.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// The connections to each master serving a group, by group.
pub struct Direct {
    /// The URL's login and TLS, for every master (its host and port
    /// replaced).
    endpoint: Endpoint,
    /// How many clients the store's pool has.
    clients: usize,
    /// By group: its master's connections (`None`: the cluster clients
    /// route it).
    routes: ArcSwap<Vec<Option<Arc<Pipes>>>>,
    /// Per master, its connections; the masters each group was routed to.
    nodes: tokio::sync::Mutex<Nodes>,
    /// A direct call was redirected: relearn the slots at the next refresh.
    redirected: AtomicBool,
}

#[derive(Default)]
struct Nodes {
    owners: Vec<Option<Server>>,
    pools: HashMap<Server, Arc<Pipes>>,
}

impl Direct {
    pub fn new(endpoint: Endpoint, clients: usize, groups: usize) -> Direct {
        Direct {
            endpoint,
            clients,
            routes: ArcSwap::from_pointee(vec![None; groups]),
            nodes: tokio::sync::Mutex::new(Nodes::default()),
            redirected: AtomicBool::new(false),
        }
    }

    /// The connections for a lookup in `group`, when its master is known.
    pub fn pipes(&self, group: usize) -> Option<Arc<Pipes>> {
        self.routes.load().get(group).cloned().flatten()
    }

    /// A direct call was answered `MOVED` or `ASK`.
    pub fn redirected(&self) {
        self.redirected.store(true, Ordering::SeqCst);
    }

    /// Routes each group (whose slots are `slots`) to its master in the
    /// view of `cluster`, connecting to masters not seen before and
    /// dropping the connections of masters that serve no group any more.
    pub async fn refresh(&self, cluster: &Client, slots: &[u16], marks: &Marks) {
        let mut nodes = self.nodes.lock().await;
        if self.redirected.swap(false, Ordering::SeqCst) {
            let _ = tokio::time::timeout(CONNECT_WAIT, cluster.sync_cluster()).await;
        }
        let Some(state) = cluster.cached_cluster_state() else {
            return;
        };
        let owners: Vec<Option<Server>> = slots
            .iter()
            .map(|s| state.get_server(*s).cloned())
            .collect();
        let routed = self.routes.load().iter().all(Option::is_some);
        if owners == nodes.owners && routed {
            return;
        }
        let mut masters: Vec<&Server> = owners.iter().flatten().collect();
        masters.sort();
        masters.dedup();
        // The store's pool spread over the masters, one client each at
        // least: no more connections carry lookups than on one Redis, so
        // each carries as many calls per read and write (with per-worker
        // runtimes, `Pipes::start` opens one per worker at least).
        let per_master = (self.clients / masters.len().max(1)).max(1);
        for master in masters {
            if nodes.pools.contains_key(master) {
                continue;
            }
            let mut endpoint = self.endpoint.clone();
            (endpoint.host, endpoint.port) = (master.host.to_string(), master.port);
            let pipes = Pipes::start(endpoint, per_master, marks.clone(), CONNECT_WAIT).await;
            if pipes.is_up() {
                nodes.pools.insert(master.clone(), Arc::new(pipes));
            }
        }
        let routes = owners
            .iter()
            .map(|o| o.as_ref().and_then(|o| nodes.pools.get(o)).cloned())
            .collect();
        self.routes.store(Arc::new(routes));
        let gone: Vec<Server> = nodes
            .pools
            .keys()
            .filter(|s| !owners.iter().flatten().any(|o| o == *s))
            .cloned()
            .collect();
        for server in gone {
            // Its connections close when the last lookup using them ends.
            nodes.pools.remove(&server);
        }
        nodes.owners = owners;
    }
}
