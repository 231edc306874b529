//! `temperature` and `max_tokens` of one role (`respondent`, `correspondent`,
//! `quality` for the judge).

use super::SettingsError;

/// A role's sampling settings, checked; `None` leaves the engine's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoleSampling {
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f32>,
    /// Most tokens per reply, at least 1.
    pub max_tokens: Option<u32>,
}

impl RoleSampling {
    /// This role's settings, with `temperature` where the role sets none.
    pub(super) fn or_temperature(self, temperature: Option<f32>) -> RoleSampling {
        RoleSampling {
            temperature: self.temperature.or(temperature),
            ..self
        }
    }
}

/// Checks the keys `<section>.temperature` and `<section>.max_tokens`.
pub(super) fn resolve(
    section: &str,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
) -> Result<RoleSampling, SettingsError> {
    if let Some(t) = temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(SettingsError::new(
            format!("{section}.temperature"),
            format!("is {t}: it must lie between 0 and 2"),
        ));
    }
    if max_tokens == Some(0) {
        return Err(SettingsError::new(
            format!("{section}.max_tokens"),
            "is 0: allow at least one token, or drop the key for the endpoint's default",
        ));
    }
    Ok(RoleSampling {
        temperature,
        max_tokens,
    })
}
