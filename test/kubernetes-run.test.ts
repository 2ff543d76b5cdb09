import { randomUUID } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { Agent } from 'undici'
import { BOOK_COMPLETION_PATH } from '../src/routes/book-completion.ts'
import { completedDelivery } from '../scripts/deliveries.ts'
import { deliver, get, requiresPostgres, signedBytesHeaders, TEST_SECRET, waitFor } from './helper.ts'
import { buildImage, freePort, requiresEngine, type ContainerEngine } from './support/container-engine.ts'
import { renderBase, schemaErrors, type DeploymentObject, type KubeObject } from './support/kubernetes.ts'
import { podmanOverlay, toYaml } from './support/kubernetes-podman.ts'
import { adminQuery, createDatabase } from './support/postgres.ts'

/**
 * deploy/kubernetes run by `podman kube play` with the image `npm run image:build` makes: two
 * pods (each migrating first, in its init container), on the host's network and a fresh database
 * of the host's Postgres, through the test-only overlay of test/support/kubernetes-podman.ts.
 * What podman does not run (Services, disruption budgets, network policies, the kubelet's probes)
 * is checked statically in test/kubernetes.test.ts; here the test polls /ready as the kubelet would.
 */
// A cold `npm run image:build` (stand-in bases and all) takes minutes; the run itself well under one.
t.setTimeout(15 * 60_000)
const MiB = 1024 * 1024

type PodObject = KubeObject & Pick<DeploymentObject['spec']['template'], 'spec'>

/** Whether podman can make a pod here (its infra container needs catatonit); else why not. */
async function podsRun (engine: ContainerEngine): Promise<true | string> {
  if (engine.name !== 'podman') return `kube play is podman's; the engine here is ${engine.name}`
  const name = `bcw-k8s-probe-${randomUUID().slice(0, 8)}`
  const created = await engine.run(['pod', 'create', '--name', name])
  await engine.run(['pod', 'rm', '-f', name])
  if (created.code === 0) return true
  return `podman cannot make a pod here (${created.stderr.trim().split('\n').at(-1)}): .ci/install-engine.sh installs catatonit`
}

/** The node process of a container (tini's child) as the host sees it: its peak RSS in MiB. */
async function peakRssMiB (engine: ContainerEngine, container: string): Promise<number> {
  const init = (await engine.run(['inspect', '--format', '{{.State.Pid}}', container])).stdout.trim()
  const [node] = (await readFile(`/proc/${init}/task/${init}/children`, 'utf8')).trim().split(/\s+/)
  const status = await readFile(`/proc/${node}/status`, 'utf8')
  return Math.round(Number(/^VmHWM:\s+(\d+) kB/m.exec(status)![1]) / 1024)
}

const engine = await requiresEngine(t, 'podman kube play of deploy/kubernetes')
const runnable = engine ? await podsRun(engine) : 'no engine'
if (engine && runnable !== true) t.test('podman kube play of deploy/kubernetes', { skip: runnable }, () => {})

if (engine && runnable === true && await requiresPostgres(t, 'podman kube play of deploy/kubernetes (the pods use the host\'s Postgres)')) {
  t.test('podman kube play: both pods migrate once, become ready, store a signed delivery each, shed a flood within the limit, and go down cleanly', async (t) => {
    const begun = Date.now()
    const built = await buildImage()
    const { url: databaseUrl, drop } = await createDatabase('bcw_k8s')
    t.teardown(drop)

    const runId = randomUUID().slice(0, 8)
    const ports = [await freePort()]
    while (ports.length < 2) ports.push(...[await freePort()].filter((port) => !ports.includes(port)))
    const perPod = podmanOverlay(await renderBase(), { runId, ports, databaseUrl, webhookSecret: TEST_SECRET })
    for (const object of new Set(perPod.flat())) t.same(await schemaErrors(object), [], `the overlay's ${object.kind} ${object.metadata.name} is still valid Kubernetes`)

    // One file per pod, played at once (test/support/kubernetes-podman.ts says why).
    const pods = perPod.map((objects) => objects.find((object) => object.kind === 'Pod') as PodObject)
    const dir = await mkdtemp(join(tmpdir(), 'bcw-k8s-'))
    t.teardown(() => rm(dir, { recursive: true, force: true }))
    const files = await Promise.all(perPod.map(async (objects, index) => {
      const file = join(dir, `pod-${index}.yaml`)
      await writeFile(file, toYaml(objects))
      return file
    }))
    const down = (file: string) => engine.run(['kube', 'down', file], { timeoutMs: 120_000 })
    t.teardown(() => Promise.all(files.map(down)))

    const played = Date.now()
    const plays = await Promise.all(files.map((file) => engine.run(['kube', 'play', file], { timeoutMs: 180_000 })))
    for (const [index, play] of plays.entries()) t.equal(play.code, 0, `kube play pod ${index}: exit 0${play.code ? ` (${play.stderr.trim()})` : ''}`)
    if (plays.some((play) => play.code !== 0)) return

    const podNames = pods.map((pod) => pod.metadata.name)
    const webhooks = podNames.map((name) => `${name}-webhook`)
    const urls = ports.map((port) => `http://127.0.0.1:${port}`)
    const readyMs = await Promise.all(urls.map((url) => waitFor(async () => {
      const answer = await get(`${url}/ready`).catch(() => undefined)
      return answer?.status === 200 ? Date.now() - played : undefined
    }, 120_000, 250)))
    t.ok(readyMs.every((ms) => ms !== undefined), `both pods ready (/ready 200) after ${readyMs.map((ms) => `${((ms ?? NaN) / 1000).toFixed(1)} s`).join(', ')}`)
    if (readyMs.some((ms) => ms === undefined)) return

    const journal = JSON.parse(await readFile(new URL('../migrations/meta/_journal.json', import.meta.url), 'utf8')) as { entries: unknown[] }
    const applied = await adminQuery<{ n: number, hashes: number }>('SELECT count(*)::int AS n, count(DISTINCT hash)::int AS hashes FROM drizzle.__drizzle_migrations', databaseUrl)
    t.same(applied, [{ n: journal.entries.length, hashes: journal.entries.length }], `the init containers applied each of the ${journal.entries.length} migrations once`)

    // What the kubelet would have set up, as podman did.
    const limit = Number((pods[0]!.spec.containers[0]!.resources as { limits: { memory: string } }).limits.memory.replace(/Mi$/, '')) * MiB
    for (const name of webhooks) {
      const [user, readOnly, memory] = (await engine.run(['inspect', '--format', '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.Memory}}', name])).stdout.trim().split(' ')
      t.same({ user, readOnly, memory: Number(memory) }, { user: '1000:1000', readOnly: 'true', memory: limit }, `${name}: uid/gid 1000, read-only root, the memory limit`)
      t.not((await engine.run(['exec', name, 'touch', '/app/written'])).code, 0, `${name}: the root filesystem refuses a write`)
      t.equal((await engine.run(['exec', name, 'touch', '/tmp/written'])).code, 0, `${name}: /tmp (the emptyDir) takes one`)
    }

    await adminQuery("INSERT INTO users (id) VALUES ('k8s-user')", databaseUrl)
    for (const [index, url] of urls.entries()) {
      const delivery = completedDelivery({ userId: 'k8s-user', chapters: 3 })
      const answer = await deliver(`${url}${BOOK_COMPLETION_PATH}`, delivery)
      t.equal(answer.status, 200, `pod ${index}: a signed delivery is answered 200 (${answer.text.slice(0, 120)})`)
      const stored = await adminQuery('SELECT j.status, count(c.*)::int AS chapters FROM book_jobs j JOIN books b ON b.job_id = j.id JOIN chapters c ON c.book_id = b.id WHERE j.id = $1 GROUP BY j.status', databaseUrl, [delivery.job_id])
      t.same(stored, [{ status: 'COMPLETED', chapters: 3 }], `pod ${index}: and stored, with its chapters`)
    }

    // The memory limit against what load shedding lets in: 40 concurrent 9.2 MB uploads to one pod.
    const flooded = Date.now()
    const agent = new Agent({ connections: 64 })
    t.teardown(() => agent.close())
    const bodies = Array.from({ length: 40 }, () => Buffer.from(JSON.stringify(completedDelivery({ userId: 'k8s-user', chapters: 100, paragraphs: 9 * 78 }))))
    const answers = await Promise.all(bodies.map((body, i) =>
      deliver(`${urls[0]}${BOOK_COMPLETION_PATH}`, body, signedBytesHeaders(body, { id: `msg_k8s_flood_${i}` }), agent)))
    const byStatus: Record<string, number> = {}
    for (const answer of answers) byStatus[answer.status] = (byStatus[answer.status] ?? 0) + 1
    t.same(Object.keys(byStatus).filter((code) => code !== '200' && code !== '503'), [], `the flood: only 200 and 503 (${JSON.stringify(byStatus)})`)
    const peak = await peakRssMiB(engine, webhooks[0]!)
    t.ok(peak * MiB < limit, `peak RSS in the pod ${peak} MiB, under its ${limit / MiB} MiB limit`)
    t.equal((await get(`${urls[0]}/health`)).status, 200, 'the flooded pod still answers /health (not killed)')
    const floodMs = Date.now() - flooded

    // As the kubelet ends a pod: SIGTERM, then SIGKILL past the grace period. `kube down` alone
    // would not show it: podman 4.3.1 kills a kube pod's containers at once (exit 137).
    const grace = pods[0]!.spec.terminationGracePeriodSeconds!
    const stopping = Date.now()
    const stopped = await engine.run(['pod', 'stop', '-t', String(grace), ...podNames], { timeoutMs: (grace + 30) * 1000 })
    const stopMs = Date.now() - stopping
    t.equal(stopped.code, 0, `both pods stopped (SIGTERM, ${grace} s grace)${stopped.code ? `: ${stopped.stderr.trim()}` : ''}`)
    for (const [index, name] of webhooks.entries()) {
      t.equal(await engine.run(['inspect', '--format', '{{.State.ExitCode}}', name]).then((run) => run.stdout.trim()), '0', `pod ${index}: the server exited 0 (not killed)`)
      const logs = await engine.run(['logs', name])
      t.match(logs.stdout + logs.stderr, /"signal":"SIGTERM","msg":"closing: finishing in-flight deliveries"/, `pod ${index}: SIGTERM reached node through tini, which drained and closed`)
      t.notOk((logs.stdout + logs.stderr).includes(TEST_SECRET.slice('whsec_'.length)), `pod ${index}: the secret is not in its logs`)
    }
    const downs = await Promise.all(files.map(down))
    for (const [index, result] of downs.entries()) t.equal(result.code, 0, `kube down pod ${index}: exit 0${result.code ? ` (${result.stderr.trim()})` : ''}`)
    for (const name of podNames) t.equal((await engine.run(['pod', 'exists', name])).code, 1, `${name} is gone`)
    t.comment(`kubernetes run figures: ${JSON.stringify({
      imageBuildS: Math.round(built.ms / 1000),
      playToReadyS: readyMs.map((ms) => +(ms! / 1000).toFixed(1)),
      flood: { answers: byStatus, peakRssMiB: peak, ms: floodMs },
      stopS: +(stopMs / 1000).toFixed(1),
      totalS: Math.round((Date.now() - begun) / 1000),
    })}`)
  })
}
