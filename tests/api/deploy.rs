//! The deployment files in `docs/` are used as they are, by systemd and by
//! Grafana, so nothing else would notice when they stop matching the binary.

mod grafana;
mod systemd;
