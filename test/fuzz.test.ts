import t, { type Test } from 'tap'
import { completedDelivery } from '../scripts/deliveries.ts'
import { createUser, deliver, freshDatabase, startApp, testConfig, type RunningApp } from './helper.ts'
import { findLeak } from './support/leaks.ts'
import { fuzzBudget, interleavingProperty, invalidProperty, newFigures, validProperty } from './fuzz/properties.ts'
import { FUZZ_DEFAULT_USER, FUZZ_USERS } from './fuzz/valid-delivery.ts'

/**
 * Property-based tests against the running app on real Postgres. `npm test` runs FUZZ_RUNS=300
 * cases; `npm run fuzz` runs 10,000 and prints the figures.
 */
const budget = fuzzBudget()
const figures = newFigures()
const started = Date.now()

/** The figures one property added (they accumulate across the three). */
function since (before: { serverErrors: number, partialWrites: number, leaks: number }) {
  return { serverErrors: figures.serverErrors - before.serverErrors, partialWrites: figures.partialWrites - before.partialWrites, leaks: figures.leaks - before.leaks }
}

async function fuzzApp (t: Test): Promise<RunningApp> {
  const running = await startApp(t, testConfig(await freshDatabase(t), { defaultUserId: FUZZ_DEFAULT_USER }, { LOG_LEVEL: 'warn' }))
  for (const user of [...FUZZ_USERS, FUZZ_DEFAULT_USER]) await createUser(running, user)
  return running
}

t.test(`${budget.valid} arbitrary valid payloads → 200 and stored byte for byte`, async (t) => {
  const running = await fuzzApp(t)
  const before = { ...figures }
  await validProperty(running, budget.valid, budget.maxChapters, figures, budget.seed)
  t.equal(figures.cases.valid >= budget.valid, true, `${figures.cases.valid} valid cases generated`)
  t.equal(since(before).serverErrors, 0, 'no 5xx')
  t.equal(since(before).partialWrites, 0, 'no partial write')
  t.equal(findLeak(running.rawLogs()), undefined, 'the logs hold no secret, stack or SQL')
})

t.test(`${budget.invalid} arbitrary invalid payloads → 4xx, never 5xx, database unchanged`, async (t) => {
  const running = await fuzzApp(t)
  // Existing jobs (one completed with a book, one failed) so a partial write to them would show.
  const existing = completedDelivery({ jobId: 'fuzz-existing-completed', userId: FUZZ_USERS[0], chapters: 3 })
  t.equal((await deliver(running.endpoint, existing)).status, 200)
  await deliver(running.endpoint, { ...existing, job_id: 'fuzz-existing-failed', status: 'failed', error: 'x', book_data: undefined })
  const before = { ...figures }
  await invalidProperty(running, ['fuzz-existing-completed', 'fuzz-existing-failed', 'fuzz-new-job'], budget.invalid, figures, budget.seed)
  t.equal(figures.requests - before.requests, figures.cases.invalid, `${figures.cases.invalid} invalid cases sent`)
  t.equal(since(before).serverErrors, 0, 'no 5xx')
  t.equal(since(before).partialWrites, 0, 'the database never changed')
  t.equal(since(before).leaks, 0, 'no response leaks a stack, SQL, path or secret')
  t.same(Object.keys(figures.invalidKinds).sort().length >= 10 || budget.invalid < 100, true, `mutation kinds: ${JSON.stringify(figures.invalidKinds)}`)
})

t.test(`${budget.interleavings} concurrent interleavings of completed / failed / redelivered deliveries`, async (t) => {
  const running = await fuzzApp(t)
  const before = { ...figures }
  await interleavingProperty(running, budget.interleavings, figures, budget.seed)
  t.equal(since(before).serverErrors, 0, 'no 5xx')
  t.equal(since(before).partialWrites, 0, 'every job ends in the contract\'s state')
})

t.teardown(() => {
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  const cases = figures.cases.valid + figures.cases.invalid + figures.cases.interleavings
  t.comment(`fuzz figures: ${JSON.stringify({ total: cases, ...figures, seconds })}`)
})
