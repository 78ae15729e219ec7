//! Who is calling: the command-service verifies the caller's access token on
//! every command itself and never trusts the forwarder's word for it.

pub mod login_limit;
pub mod password;
pub mod refresh_tokens;

// Who is calling is decided per command (`commands::execute` verifies the
// token, `commands::Attempt::actor` reads the actor as the event store knows
// them); the session is checked by the append itself.
