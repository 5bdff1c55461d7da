//! pgstash as an operator sees it, through the network and the files:
//! the slow-query log, `/metrics` and `/readyz` (`observe`), the admin
//! actions on the metrics port (`admin`), N+1 bursts (`nplusone`), plans and index
//! hints of slow shapes (`explain`), and the `rules suggest`, `rules
//! check` and `top` tools on a live workload (`tools`), and the README's
//! quick start run as written (`quickstart`).
//!
//! One test binary: `cargo test -p pgstash-tests --test operate`.

mod admin;
mod explain;
mod nplusone;
mod observe;
mod quickstart;
mod tools;
