use std::process::ExitCode;

use nanoclaw_host::config::{
    Config, DEFAULT_CONFIG_TOML, Paths, create_private_dir, write_private_file,
};

pub fn path() -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    println!("{}", paths.config_file().display());
    Ok(ExitCode::SUCCESS)
}

pub fn init(force: bool) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let file = paths.config_file();
    if file.exists() && !force {
        eprintln!(
            "{} exists; keeping it (use --force to overwrite)",
            file.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    create_private_dir(&paths.home)?;
    write_private_file(&file, DEFAULT_CONFIG_TOML.as_bytes())?;
    println!("wrote {}", file.display());
    Ok(ExitCode::SUCCESS)
}

pub fn show(json: bool) -> anyhow::Result<ExitCode> {
    let paths = Paths::from_env().map_err(anyhow::Error::msg)?;
    let config = Config::load(&paths.config_file())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&config)?);
    } else {
        print!("{}", toml::to_string_pretty(&config)?);
    }
    Ok(ExitCode::SUCCESS)
}
