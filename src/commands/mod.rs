//! One module per subcommand.

pub mod bench;
pub mod export;
pub mod train;
