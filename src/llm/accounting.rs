//! The model client's accounting around each request: which models to try (the chain,
//! skipping those cooling down), the budget reserved before a call and settled after it,
//! the `runs` row of every call (and of every failure), the rate limits' slots given
//! back with what a call used, each model's health, and the structured mode each server
//! and model answered in. The call loop itself is in `mod.rs`.

use super::*;

impl Llm {
    /// Frees a call's concurrency slots; one that cannot be freed expires on its own.
    pub(super) async fn release(&self, scope: &Scope, slots: &[Uuid]) {
        if let Err(e) = store::limits::release(&scope.pool, slots).await {
            tracing::warn!(error = %e, "could not free rate-limit slots; they expire with their lease");
        }
    }

    /// Ends a call's hold on its keys: frees its slots and puts the tokens it did not
    /// use back (see [`store::limits::settle`]). A failure is logged: the slots expire
    /// with their lease and the estimate stands.
    pub(super) async fn end_call(
        &self,
        scope: &Scope,
        keys: &[String],
        slots: &[Uuid],
        estimated: u32,
        used: Option<u32>,
    ) {
        if let Err(e) =
            store::limits::settle(&scope.pool, &self.limits, keys, slots, estimated, used).await
        {
            tracing::warn!(error = %e, "could not settle a call's rate limits; its slots expire with their lease");
        }
    }

    /// The agent's model and fallbacks, without those cooling down (all of them, in
    /// order, when every one is), and those skipped.
    pub(super) async fn chain(
        &self,
        scope: &Scope,
        agent: &AgentConfig,
        base_url: &str,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let mut chain = vec![agent.model_id.clone()];
        for m in &agent.fallback_model_ids {
            if !chain.contains(m) {
                chain.push(m.clone());
            }
        }
        if chain.len() == 1 {
            return Ok((chain, Vec::new()));
        }
        let cooling = store::models::cooldowns(&scope.pool, base_url, &chain)
            .await
            .map_err(|source| Error::Store {
                doing: "reading model cooldowns".into(),
                source,
            })?;
        let (ready, skipped): (Vec<String>, Vec<String>) = chain
            .iter()
            .cloned()
            .partition(|m| !cooling.contains_key(m));
        for (m, until) in &cooling {
            tracing::info!(model = %m, until = %until, "model cooling down: skipped");
        }
        Ok(if ready.is_empty() {
            (chain, Vec::new())
        } else {
            (ready, skipped)
        })
    }

    /// The mode to start with: what this server took for the model, or the dialect's
    /// strongest once the step-down is older than `[llm] mode_retry_after_secs`, or
    /// when it was learned in another dialect (a row from before dialects were known
    /// counts as `generic`).
    pub(super) async fn learned_mode(
        &self,
        scope: &Scope,
        base_url: &str,
        model: &str,
        dialect: Dialect,
    ) -> StructuredMode {
        let strongest = dialect.modes()[0];
        let learned = self.memory.mode(&scope.pool, base_url, model).await;
        match learned {
            Some(l) if l.dialect.unwrap_or(Dialect::Generic) != dialect => strongest,
            Some(l)
                if l.mode != strongest
                    && chrono::Utc::now() - l.at
                        > chrono::Duration::seconds(self.cfg.mode_retry_after_secs as i64) =>
            {
                tracing::info!(model, learned = %l.mode, "trying the strongest structured mode again");
                strongest
            }
            // Never stronger than the dialect asks.
            Some(l) => l.mode.max(strongest),
            None => strongest,
        }
    }

    pub(super) async fn step_down(
        &self,
        scope: &Scope,
        base_url: &str,
        model: &str,
        to: StructuredMode,
        dialect: Dialect,
    ) {
        tracing::info!(model, mode = %to, "the server did not take the structured mode: stepping down");
        self.memory
            .remember(&scope.pool, base_url, model, to, dialect)
            .await;
    }

    /// Counts a failure of `model` for every job; it may start a cooldown.
    pub(super) async fn sick(&self, scope: &Scope, base_url: &str, model: &str, error: &str) {
        match store::models::record_failure(
            &scope.pool,
            base_url,
            model,
            error,
            self.cfg.model_failures_before_cooldown,
            self.cfg.model_cooldown_secs,
        )
        .await
        {
            Ok(Some(until)) => {
                tracing::warn!(model, %until, "model cooling down after repeated failures")
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(model, error = %e, "could not record a model failure"),
        }
    }

    /// What a request may cost at worst: its prompt (estimated generously from its size)
    /// and `max_tokens` of answer, at the model's price; nothing for a model without one.
    pub(super) fn worst_case(
        &self,
        model: &str,
        call: &Call,
        agent: &AgentConfig,
        repair: Option<&RepairTurn>,
    ) -> f64 {
        let Some(p) = self.cfg.prices.get(model) else {
            return 0.0;
        };
        let mut bytes = call.system.len() + call.user.len();
        if let Some((_, schema)) = &call.schema {
            bytes += schema.to_string().len() + 200;
        }
        if let Some(r) = repair {
            bytes += r.answer.len() + r.problem.len() + 200;
        }
        // Tokenizers make at least one token of two bytes of ordinary text; 32 tokens
        // per message cover the chat template.
        let prompt = (bytes / 2 + 128) as f64;
        (prompt * p.prompt + f64::from(agent.max_tokens.max(0)) * p.completion) / 1e6
    }

    /// Reserves `amount` for the scope's project (none without a project).
    pub(super) async fn reserve(
        &self,
        scope: &Scope,
        agent: &AgentConfig,
        amount: f64,
    ) -> Result<Option<Reservation>> {
        let Some(project) = scope.project_id else {
            return Ok(None);
        };
        let ttl = Duration::from_secs(self.cfg.timeout_secs.saturating_mul(2) + 60);
        let reserved = store::budgets::reserve(
            &scope.pool,
            project,
            Some(scope.job_id),
            amount,
            ttl,
            self.cfg.budget_soft_limit,
        )
        .await
        .map_err(|source| Error::Store {
            doing: format!("reserving the budget of project {project}"),
            source,
        })?;
        match reserved {
            Some(r) => {
                if let (Some(budget), spent, held) = r.state
                    && budget > 0.0
                    && (spent + held) >= budget * self.cfg.budget_soft_limit
                {
                    tracing::warn!(%project, spent, reserved = held, budget,
                        "project is past its budget's soft limit");
                }
                Ok(Some(r))
            }
            None => {
                let s = store::budgets::state(&scope.pool, project)
                    .await
                    .map_err(|source| Error::Store {
                        doing: format!("reading the budget of project {project}"),
                        source,
                    })?;
                let s = s.unwrap_or(store::budgets::BudgetState {
                    budget_usd: None,
                    spent_usd: 0.0,
                    reserved_usd: 0.0,
                    left_usd: None,
                });
                Err(Error::OverBudget {
                    project,
                    agent: agent.agent_id.clone(),
                    spent: s.spent_usd,
                    reserved: s.reserved_usd,
                    budget: s.budget_usd.unwrap_or(0.0),
                    cost: amount,
                })
            }
        }
    }

    /// Records a request's runs row and settles its reservation.
    pub(super) async fn settle(
        &self,
        scope: &Scope,
        reservation: Option<Reservation>,
        run: &NewRun<'_>,
    ) -> Result<()> {
        if let Some(r) = &reservation
            && run.cost_usd > r.amount_usd + 1e-9
        {
            tracing::warn!(
                reserved = r.amount_usd,
                cost = run.cost_usd,
                agent = run.agent,
                "a call cost more than its reservation (its prompt was larger than estimated)"
            );
        }
        store::budgets::settle(&scope.pool, reservation.map(|r| r.id), run)
            .await
            .map_err(|source| Error::Store {
                doing: format!("recording a run of {}", run.agent),
                source,
            })
    }

    /// The cost of an answer: the provider's figure, else the price table, else none.
    pub(super) fn cost(&self, usage: &openai::Usage, models: [&str; 2]) -> (f64, CostSource) {
        if let Some(c) = usage.cost_usd {
            return (c, CostSource::Provider);
        }
        match models.iter().find_map(|m| self.cfg.prices.get(*m)) {
            Some(p) => {
                let cached = f64::from(usage.cached_tokens.min(usage.prompt_tokens));
                let fresh = f64::from(usage.prompt_tokens) - cached;
                let cost = (fresh * p.prompt
                    + cached * p.cached_prompt.unwrap_or(p.prompt)
                    + f64::from(usage.completion_tokens) * p.completion)
                    / 1e6;
                (cost, CostSource::PriceTable)
            }
            None => (0.0, CostSource::Unpriced),
        }
    }

    /// A failed request's runs row.
    pub(super) async fn failed(
        &self,
        scope: &Scope,
        call: &Call,
        t: &Try<'_>,
        f: &Failure,
        notes: &[String],
    ) -> Result<()> {
        tracing::warn!(agent = %call.agent, model = t.model, mode = ?t.mode, error = %f.message(), "model call failed");
        let usage = match f {
            Failure::Malformed { usage, .. } => *usage,
            _ => openai::Usage::default(),
        };
        let (cost, source) = self.cost(&usage, [t.model, t.model]);
        let notes = (!notes.is_empty()).then(|| notes.join("; "));
        let run = NewRun {
            job_id: Some(scope.job_id),
            project_id: scope.project_id,
            attempt: scope.attempt,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            reasoning_tokens: usage.reasoning_tokens,
            cost_usd: cost,
            cost_source: Some(source),
            structured_mode: t.mode,
            dialect: Some(t.dialect),
            duration_ms: t.started.elapsed().as_millis() as i32,
            error: Some(f.message()),
            notes: notes.as_deref(),
            ..NewRun::call(&call.agent, self.provider.label(), t.model)
        };
        self.settle(scope, t.reservation, &run).await
    }
}
