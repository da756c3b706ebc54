//! `tidewire-relay` binary: parses flags and environment, then runs the relay library.

fn main() -> anyhow::Result<()> {
    Ok(())
}
