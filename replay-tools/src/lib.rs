//! `ledger-replay`, the finance team's audit tools (as-of balances, history,
//! verify, rebuild, export), arrives with the replay-tools issue. It reads
//! the same stores as the server through `store::Store`.
