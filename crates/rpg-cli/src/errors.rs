//! Errors in the user's words: the library names a setting by its config
//! key (`batch_size`); on the command line it is a flag (`--batch-size`).

use clap::CommandFactory;
use rpg_train::SettingError;
use rpg_train::config::ConfigError;

use crate::cli::Cli;

/// The text of one cause of an error, with a setting named as a flag where
/// the command line has one for it.
pub fn as_user_gave_it(cause: &(dyn std::error::Error + 'static)) -> String {
    let setting = if let Some(e) = cause.downcast_ref::<rpg_train::Error>() {
        e.setting()
    } else if let Some(e) = cause.downcast_ref::<ConfigError>() {
        e.setting()
    } else {
        None
    };
    match setting {
        Some(SettingError::Invalid(s)) => format!("{} {}: {}", flag(s.key), s.value, s.reason),
        Some(SettingError::Conflict(c)) => format!(
            "{} and {} cannot go together: {}",
            flag(c.first),
            flag(c.second),
            c.reason
        ),
        _ => {
            // Other errors name settings in backticks by key; the library
            // lists which (by variant), so nothing here reads the text to
            // decide anything.
            let keys = cause
                .downcast_ref::<rpg_train::Error>()
                .map(rpg_train::Error::named_settings)
                .unwrap_or_default();
            keys.iter().fold(cause.to_string(), |text, key| {
                text.replace(&format!("`{key}`"), &flag(key))
            })
        }
    }
}

/// `--key-with-dashes` where a command has that flag, else the config key.
pub fn flag(key: &str) -> String {
    let long = key.replace('_', "-");
    let command = Cli::command();
    let is_flag = command
        .get_subcommands()
        .flat_map(|c| c.get_arguments())
        .any(|a| a.get_long() == Some(long.as_str()));
    if is_flag {
        format!("--{long}")
    } else {
        format!("`{key}` (config)")
    }
}
