//! Shell completions and man pages, generated from the clap definitions so they never drift from
//! the real options.

use crate::out::outln;
use crate::Cli;
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use crx580::{err, Result};
use std::path::PathBuf;

#[derive(Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

#[derive(Args)]
pub struct ManpageArgs {
    /// Write crx580.1 and one crx580-SUBCOMMAND.1 per subcommand into DIR instead of printing crx580.1.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

pub fn completions(a: CompletionArgs) -> Result<()> {
    // Generated into memory first: clap_complete panics on a failed write, and stdout may be a
    // closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "crx580", &mut script);
    outln!("{}", String::from_utf8_lossy(&script).trim_end());
    Ok(())
}

pub fn manpage(a: ManpageArgs) -> Result<()> {
    let command = Cli::command();
    match a.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| err!(Io, "cannot create {}: {e}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .map_err(|e| err!(Io, "cannot write man pages to {}: {e}", dir.display()))?;
            outln!("wrote man pages to {}", dir.display());
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| err!(Io, "cannot render the man page: {e}"))?;
            outln!("{}", String::from_utf8_lossy(&page).trim_end());
        }
    }
    Ok(())
}
