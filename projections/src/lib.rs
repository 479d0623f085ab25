//! Read models folded from the global event log (balances, transactions,
//! usage, invoices, stats). The projector arrives with the API issue; the
//! log it tails is `store::Store::read_after`, which never skips an event.
