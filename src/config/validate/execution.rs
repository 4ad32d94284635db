//! Validation of `execution:` and the mapping of the old format's `execution_config:`
//! onto it (native keys win; every mapping is recorded for `--show-layers`).

use super::*;

impl Validator<'_> {
    pub(super) fn execution(&mut self, r: &RawExecution) -> Execution {
        Execution {
            max_parallel_tests: self
                .count(
                    &r.max_parallel_tests,
                    &bounds::PARALLEL,
                    "`execution.max_parallel_tests`",
                )
                .map(|n| n as usize),
            max_memory_mb: self.count(
                &r.max_memory_mb,
                &bounds::MEMORY_MB,
                "`execution.max_memory_mb`",
            ),
            max_cpu_percent: self
                .count(
                    &r.max_cpu_percent,
                    &bounds::CPU_PERCENT,
                    "`execution.max_cpu_percent`",
                )
                .map(|n| n as u32),
            global_timeout: self.duration(
                &r.global_timeout_minutes,
                &bounds::TIMEOUT_MINUTES,
                "`execution.global_timeout_minutes`",
            ),
            background_layers: r
                .background_layers
                .iter()
                .flatten()
                .map(|n| n.value.clone())
                .collect(),
            background_max_slots: self
                .count(
                    &r.background_max_slots,
                    &bounds::PARALLEL,
                    "`execution.background_max_slots`",
                )
                .map(|n| n as usize),
            kill_grace: self
                .duration(
                    &r.kill_grace_seconds,
                    &bounds::KILL_GRACE_SECONDS,
                    "`execution.kill_grace_seconds`",
                )
                .unwrap_or(Duration::from_secs(5)),
            retry_backoff: self
                .int_duration(
                    &r.retry_backoff_ms,
                    &bounds::WAIT_MS,
                    "`execution.retry_backoff_ms`",
                )
                .unwrap_or(Duration::from_millis(200)),
            output_head_bytes: self
                .count(
                    &r.output_head_bytes,
                    &bounds::OUTPUT_BYTES,
                    "`execution.output_head_bytes`",
                )
                .unwrap_or(16 * 1024) as usize,
            output_tail_bytes: self
                .count(
                    &r.output_tail_bytes,
                    &bounds::OUTPUT_BYTES,
                    "`execution.output_tail_bytes`",
                )
                .unwrap_or(64 * 1024) as usize,
            log_file_max_bytes: self
                .count(
                    &r.log_file_max_mb,
                    &bounds::LOG_FILE_MB,
                    "`execution.log_file_max_mb`",
                )
                .unwrap_or(8)
                << 20,
            keep_runs: self
                .count(&r.keep_runs, &bounds::KEEP_RUNS, "`execution.keep_runs`")
                .unwrap_or(50) as usize,
            runs_max_bytes: self
                .count(
                    &r.runs_max_mb,
                    &bounds::RUNS_MAX_MB,
                    "`execution.runs_max_mb`",
                )
                .unwrap_or(1024)
                << 20,
            real_services: r.real_services.unwrap_or(false),
            default_command: self.non_empty(&r.default_command, "`execution.default_command`"),
            layer_execution_mode: r.layer_execution_mode.unwrap_or_default(),
            inter_layer_delay: self.delay(
                &r.inter_layer_delay_seconds,
                "`execution.inter_layer_delay_seconds`",
            ),
            layer_startup_timeout: self.duration(
                &r.layer_startup_timeout_seconds,
                &bounds::TIMEOUT_SECONDS,
                "`execution.layer_startup_timeout_seconds`",
            ),
            resource_conflict_resolution: r.resource_conflict_resolution.unwrap_or_default(),
            max_background_layers: self
                .count(
                    &r.max_background_layers,
                    &bounds::PARALLEL,
                    "`execution.max_background_layers`",
                )
                .map(|n| n as usize),
        }
    }

    /// `execution_config:` onto `execution` (native keys win). Returns the mappings.
    pub(super) fn map_execution_config(
        &mut self,
        ec: &RawExecutionConfig,
        exec: &mut Execution,
        native: &RawExecution,
    ) -> Vec<Mapping> {
        let mut maps = Vec::new();
        let p = "execution_config";
        if let Some(m) = &ec.layer_execution_mode {
            if native.layer_execution_mode.is_none() {
                exec.layer_execution_mode = m.value;
            }
            maps.push(Mapping::new(
                format!("{p}.layer_execution_mode"),
                "execution.layer_execution_mode",
            ));
        }
        if ec.global_timeout_minutes.is_some() && native.global_timeout_minutes.is_none() {
            exec.global_timeout = self.duration(
                &ec.global_timeout_minutes,
                &bounds::TIMEOUT_MINUTES,
                "`execution_config.global_timeout_minutes`",
            );
            maps.push(Mapping::new(
                format!("{p}.global_timeout_minutes"),
                "execution.global_timeout_minutes",
            ));
        }
        if ec.layer_startup_timeout_seconds.is_some()
            && native.layer_startup_timeout_seconds.is_none()
        {
            exec.layer_startup_timeout = self.duration(
                &ec.layer_startup_timeout_seconds,
                &bounds::TIMEOUT_SECONDS,
                "`execution_config.layer_startup_timeout_seconds`",
            );
            maps.push(Mapping::new(
                format!("{p}.layer_startup_timeout_seconds"),
                "execution.layer_startup_timeout_seconds (startup timeout of services without their own)",
            ));
        }
        if ec.inter_layer_delay_seconds.is_some() && native.inter_layer_delay_seconds.is_none() {
            exec.inter_layer_delay = self.delay(
                &ec.inter_layer_delay_seconds,
                "`execution_config.inter_layer_delay_seconds`",
            );
            maps.push(Mapping::new(
                format!("{p}.inter_layer_delay_seconds"),
                "execution.inter_layer_delay_seconds (a wait between foreground stages)",
            ));
        }
        if ec.max_global_parallel_tests.is_some() && native.max_parallel_tests.is_none() {
            exec.max_parallel_tests = self
                .count(
                    &ec.max_global_parallel_tests,
                    &bounds::PARALLEL,
                    "`execution_config.max_global_parallel_tests`",
                )
                .map(|n| n as usize);
            maps.push(Mapping::new(
                format!("{p}.max_global_parallel_tests"),
                "execution.max_parallel_tests (global slots)",
            ));
        }
        if ec.max_memory_usage_mb.is_some() && native.max_memory_mb.is_none() {
            exec.max_memory_mb = self.count(
                &ec.max_memory_usage_mb,
                &bounds::MEMORY_MB,
                "`execution_config.max_memory_usage_mb`",
            );
            maps.push(Mapping::new(
                format!("{p}.max_memory_usage_mb"),
                "execution.max_memory_mb",
            ));
        }
        if ec.max_cpu_usage_percent.is_some() && native.max_cpu_percent.is_none() {
            exec.max_cpu_percent = self
                .count(
                    &ec.max_cpu_usage_percent,
                    &bounds::CPU_PERCENT,
                    "`execution_config.max_cpu_usage_percent`",
                )
                .map(|n| n as u32);
            maps.push(Mapping::new(
                format!("{p}.max_cpu_usage_percent"),
                "execution.max_cpu_percent",
            ));
        }
        if let Some(r) = &ec.resource_conflict_resolution {
            if native.resource_conflict_resolution.is_none() {
                exec.resource_conflict_resolution = r.value;
            }
            let note = match r.value {
                ConflictResolution::PriorityBased => "execution.resource_conflict_resolution",
                _ => {
                    "execution.resource_conflict_resolution (admitted as priority_based: the queue is first come, first served within a rank)"
                }
            };
            maps.push(Mapping::new(
                format!("{p}.resource_conflict_resolution"),
                note,
            ));
        }
        if ec.default_command.is_some() && native.default_command.is_none() {
            exec.default_command =
                self.non_empty(&ec.default_command, "`execution_config.default_command`");
            maps.push(Mapping::new(
                format!("{p}.default_command"),
                "execution.default_command",
            ));
        }
        if let Some(bg) = &ec.background_execution {
            if bg.enabled == Some(false) {
                maps.push(Mapping::new(
                    format!("{p}.background_execution.enabled: false"),
                    "every layer runs in the foreground (`background` flags are ignored)",
                ));
            }
            if bg.background_layers.is_some() {
                maps.push(Mapping::new(
                    format!("{p}.background_execution.background_layers"),
                    "`background: true` of each layer that does not set its own",
                ));
            }
            if bg.max_background_layers.is_some() && native.max_background_layers.is_none() {
                exec.max_background_layers = self
                    .count(
                        &bg.max_background_layers,
                        &bounds::PARALLEL,
                        "`execution_config.background_execution.max_background_layers`",
                    )
                    .map(|n| n as usize);
                maps.push(Mapping::new(
                    format!("{p}.background_execution.max_background_layers"),
                    "execution.max_background_layers",
                ));
            }
        }
        if ec.fail_fast_strategy.is_some() {
            maps.push(Mapping::new(
                format!("{p}.fail_fast_strategy"),
                "each named layer's fail_fast",
            ));
        }
        maps
    }

    /// A wait in seconds (0 allowed).
    pub(super) fn delay(&mut self, v: &Option<Located<f64>>, what: &str) -> Option<Duration> {
        self.duration(v, &bounds::KILL_GRACE_SECONDS, what)
            .filter(|d| !d.is_zero())
    }
}
