//! The team aggregate (one stream per account, docs/adr/0017): who may act
//! for the account and with which role, the invitations open, the plan
//! limits staff override for it and the counts the SaaS reports. Pure:
//! time, ids, token hashes, seat limits and the caller's roster role come
//! inside the commands.

mod aggregate;
#[cfg(test)]
mod tests;

pub use aggregate::{
    Member, MemberStatus, Seed, Team, TeamAction, TeamCommand, TeamError, INVITATIONS_OPEN_MAX,
    MEMBERS_MAX, SEEN_EVERY_SECONDS,
};
