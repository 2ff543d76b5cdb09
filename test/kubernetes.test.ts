import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { isMap, isScalar, parse, type YAMLMap } from 'yaml'
import { EnvSchema, pressureLimits } from '../src/config.ts'
import { SHUTDOWN_GRACE_MS } from '../src/plugins/graceful-close.ts'
import { freshDatabase, get, startApp, testConfig } from './helper.ts'
import {
  BASE_DIR, isExample, only, readKustomization, readManifests, renderBase, schemaErrors, unknownFields,
  type DeploymentObject, type KubeObject,
} from './support/kubernetes.ts'

/**
 * deploy/kubernetes, statically: what an operator applies is valid for the API server, reads every
 * setting the service has, probes routes the app serves, outlasts the service's own drain, leaves
 * room for what load shedding lets in, and runs locked down. test/kubernetes-run.test.ts runs it.
 */
const manifests = await readManifests()
const objects = manifests.map((manifest) => manifest.object)
const deployment = only<DeploymentObject>(objects, 'Deployment')
const pod = deployment.spec.template.spec
const [webhook] = pod.containers
const configMap = only(objects, 'ConfigMap') as KubeObject & { data: Record<string, string> }
const secret = only(objects, 'Secret') as KubeObject & { stringData: Record<string, string>, data?: unknown }
const MiB = 1024 * 1024

t.test('every manifest parses and validates against the Kubernetes API schema, with no field the API does not know', async (t) => {
  t.same(objects.map((object) => object.kind).sort(), ['ConfigMap', 'Deployment', 'NetworkPolicy', 'PodDisruptionBudget', 'Secret', 'Service'], 'one object of each kind')
  for (const { file, object } of manifests) {
    t.same(await schemaErrors(object), [], `${file}: ${object.kind} ${object.metadata.name} validates (kubernetes-models)`)
  }
  t.same(unknownFields(objects), [], 'every field is one the API types have')

  // The two checks can fail: a wrong type, and a misspelt field that the schema alone lets through.
  const wrongType = structuredClone(deployment)
  Object.assign(wrongType.spec, { replicas: 'two' })
  t.match(await schemaErrors(wrongType), [/replicas must be integer/], 'a wrong type is caught by the schema')
  const misspelt = structuredClone(deployment)
  const { readinessProbe, ...rest } = misspelt.spec.template.spec.containers[0]!
  misspelt.spec.template.spec.containers[0] = { ...rest, readinesProbe: readinessProbe }
  t.same(await schemaErrors(misspelt), [], 'the schema alone lets a misspelt field through')
  t.match(unknownFields([configMap, misspelt]), [{ index: 1, message: /'"?readinesProbe"?' does not exist in type 'IContainer'/ }], 'the field check catches it')
  t.match(await schemaErrors({ apiVersion: 'apps/v1', kind: 'Deployments', metadata: { name: 'x' } }), [/unknown kind/], 'an unknown kind is an error')
})

t.test('kustomization.yaml lists every manifest but the *.example.yaml files, each once', async (t) => {
  const kustomization = await readKustomization()
  t.equal(kustomization.apiVersion, 'kustomize.config.k8s.io/v1beta1')
  t.equal(kustomization.kind, 'Kustomization')
  t.same(Object.keys(kustomization).sort(), ['apiVersion', 'kind', 'resources'], 'resources only: the base renders as its files are, which the run test relies on')
  const files = (await readdir(BASE_DIR)).filter((file) => file !== 'kustomization.yaml')
  t.same(files.filter((file) => !file.endsWith('.yaml')), [], 'nothing but YAML in the base')
  t.same([...kustomization.resources].sort(), files.filter((file) => !isExample(file)).sort(), 'every manifest but the examples is a resource')
  t.equal(new Set(kustomization.resources).size, kustomization.resources.length, 'each once')
  t.same(files.filter(isExample).sort(), ['networkpolicy.example.yaml', 'secret.example.yaml'], 'the examples: the Secret (the operator creates it) and the NetworkPolicy')
  const rendered = await renderBase()
  t.same(rendered.map((object) => object.kind).sort(), ['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service'], 'what the base applies')
  t.notOk(rendered.some((object) => object.kind === 'Secret'), 'never a Secret: applying the base cannot overwrite the operator\'s')
})

t.test('the ConfigMap and the Secret together name exactly the variables of the config schema', async (t) => {
  const variables = Object.keys(EnvSchema.properties).sort()
  const fromConfigMap = Object.keys(configMap.data)
  const fromSecret = Object.keys(secret.stringData)
  t.same(fromSecret.sort(), ['DATABASE_URL', 'WEBHOOK_SECRET'], 'the Secret holds the database URL and the webhook secret')
  t.same([...fromConfigMap, ...fromSecret].sort(), variables, 'ConfigMap + Secret = EnvSchema, none twice')
  t.same(Object.values(secret.stringData), ['', ''], 'the example holds no value')
  t.equal(secret.data, undefined, 'and no base64 data either')

  for (const [variable, value] of Object.entries(configMap.data)) {
    t.equal(typeof value, 'string', `${variable} is a string (a ConfigMap holds nothing else)`)
    const fallback = (EnvSchema.properties[variable as keyof typeof EnvSchema.properties] as { default?: unknown }).default
    t.equal(value, fallback === undefined ? '' : String(fallback), `${variable}: the service's own default${fallback === undefined ? ' (empty: not set)' : ''}`)
  }
  for (const container of [...pod.initContainers ?? [], ...pod.containers]) {
    t.same(container.envFrom, [
      { configMapRef: { name: configMap.metadata.name } },
      { secretRef: { name: secret.metadata.name } },
    ], `${container.name}: every variable from the ConfigMap and the Secret`)
    t.equal(container.env, undefined, `${container.name}: nothing set beside them`)
  }
})

t.test('probes: startup and liveness on /health, readiness on /ready, routes the app answers on its port', async (t) => {
  const port = webhook!.ports?.find((entry) => entry.name === 'http')
  t.equal(port?.containerPort, Number(configMap.data.PORT), 'the port named http is the PORT the service listens on')
  const probes = { startupProbe: '/health', livenessProbe: '/health', readinessProbe: '/ready' } as const
  const app = await startApp(t, testConfig(await freshDatabase(t)))
  for (const [probe, path] of Object.entries(probes)) {
    const spec = webhook![probe] as { httpGet?: { path: string, port: string | number }, timeoutSeconds?: number }
    t.same(spec.httpGet, { path, port: 'http' }, `${probe}: GET ${path} on the http port`)
    t.ok(app.app.hasRoute({ method: 'GET', url: path }), `${path} is a route of the app`)
    t.equal((await get(`${app.url}${path}`)).status, 200, 'and answers 200 with the database up')
  }
  // /ready bounds its database ping at 2 s (src/routes/health.ts): a shorter timeout would count a
  // slow database as a failed probe before the route could say 503.
  t.ok((webhook!.readinessProbe as { timeoutSeconds: number }).timeoutSeconds > 2, 'readiness waits longer than the ping\'s own bound')
})

t.test('shutdown: a preStop pause, then SIGTERM, within a grace period longer than the pause and the drain', async (t) => {
  const preStop = (webhook!.lifecycle as { preStop?: { sleep?: { seconds: number } } }).preStop
  const pauseSeconds = preStop?.sleep?.seconds ?? 0
  t.ok(pauseSeconds >= 3, `a preStop pause of ${pauseSeconds} s for the endpoints to be removed before SIGTERM`)
  const grace = pod.terminationGracePeriodSeconds!
  t.ok(grace > pauseSeconds + SHUTDOWN_GRACE_MS / 1000,
    `terminationGracePeriodSeconds ${grace} > ${pauseSeconds} s pause + ${SHUTDOWN_GRACE_MS / 1000} s drain (SHUTDOWN_GRACE_MS)`)
  t.same(deployment.spec.strategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } }, 'a rollout never has fewer pods ready')
})

/** A Kubernetes memory quantity (`768Mi`, `1Gi`, `500M`) in bytes. */
function bytesOf (quantity: string): number {
  const units: Record<string, number> = { '': 1, Ki: 1024, Mi: MiB, Gi: 1024 * MiB, k: 1e3, M: 1e6, G: 1e9 }
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?$/.exec(quantity)
  if (!match) throw new Error(`not a memory quantity: ${quantity}`)
  return Number(match[1]) * units[match[2] ?? '']!
}

t.test('resources: the memory limit leaves room for what load shedding lets in, as measured', async (t) => {
  // The measurement is written once, in the comment above the webhook container's resources.
  const containers = manifests.find((manifest) => manifest.object.kind === 'Deployment')!
    .document.getIn(['spec', 'template', 'spec', 'containers', 0], true) as YAMLMap
  const key = isMap(containers) ? containers.items.find((pair) => isScalar(pair.key) && pair.key.value === 'resources')?.key : undefined
  const comment = (isScalar(key) ? key.commentBefore : undefined) ?? ''
  const peakMiB = Number(/peak RSS (\d+) MiB/.exec(comment)?.[1])
  const normalMiB = Number(/(\d+) MiB under normal load/.exec(comment)?.[1])
  const budgetMiB = Number(/MAX_INFLIGHT_BODY_BYTES (\d+) MiB/.exec(comment)?.[1])
  t.ok(peakMiB > 0 && normalMiB > 0, `the comment gives the measured peak (${peakMiB} MiB) and the normal load (${normalMiB} MiB)`)
  t.equal(budgetMiB * MiB, Number(configMap.data.MAX_INFLIGHT_BODY_BYTES), 'measured with the MAX_INFLIGHT_BODY_BYTES the ConfigMap sets')

  const { requests, limits } = webhook!.resources as { requests: Record<string, string>, limits: Record<string, string> }
  const limit = bytesOf(limits.memory!)
  t.ok(limit > peakMiB * MiB, `memory limit ${limits.memory} > the measured peak ${peakMiB} MiB`)
  t.ok(bytesOf(requests.memory!) > peakMiB * MiB, `memory request ${requests.memory} > the peak too: a pod after a flood is within its request`)
  t.ok(normalMiB < peakMiB, `the normal load (${normalMiB} MiB) below the flood`)
  t.ok(bytesOf(requests.memory!) <= limit, 'request within the limit')
  t.ok(requests.cpu, 'a CPU request for the scheduler')

  // Under this limit the shedder's RSS threshold (pressureLimits, from the cgroup's limit as Node
  // reports it) must sit above the flood's peak, or a pod would shed everything after a flood.
  const reported = process.constrainedMemory
  process.constrainedMemory = () => limit
  let threshold: number
  try {
    threshold = pressureLimits().maxRssBytes
  } finally {
    process.constrainedMemory = reported
  }
  t.ok(threshold > peakMiB * MiB, `the shedder's RSS threshold under it (${Math.round(threshold / MiB)} MiB) > the peak`)
  t.ok(threshold < limit, 'and below the limit: it sheds before the kernel kills')
})

t.test('security: non-root uid/gid 1000, read-only root with /tmp on an emptyDir, no privilege, no capability, RuntimeDefault seccomp', async (t) => {
  t.equal(pod.automountServiceAccountToken, false, 'no API token in the pods')
  const volumes = pod.volumes as Array<{ name: string, emptyDir?: unknown }>
  for (const container of [...pod.initContainers ?? [], ...pod.containers]) {
    // What the container runs with: its own settings over the pod's.
    const effective = { ...pod.securityContext, ...container.securityContext as Record<string, unknown> }
    t.match(effective, {
      runAsNonRoot: true,
      runAsUser: 1000,
      runAsGroup: 1000,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    }, `${container.name}: locked down`)
    t.notOk((effective.capabilities as { add?: unknown }).add, `${container.name}: no capability added back`)
    t.notOk(effective.privileged, `${container.name}: not privileged`)
    const mounts = container.volumeMounts as Array<{ name: string, mountPath: string }>
    const tmp = mounts.find((mount) => mount.mountPath === '/tmp')
    t.ok(tmp && volumes.find((volume) => volume.name === tmp.name)?.emptyDir, `${container.name}: /tmp is an emptyDir`)
  }
})

t.test('the Deployment, its migrations, the Service and the PodDisruptionBudget agree', async (t) => {
  const compose = parse(await readFile(join(BASE_DIR, '../../docker-compose.yml'), 'utf8'), { merge: true })
  t.equal(deployment.spec.replicas, 2, '2 replicas')
  const labels = deployment.spec.template.metadata.labels
  t.match(labels, deployment.spec.selector.matchLabels, 'the selector matches the pods')
  t.equal(webhook!.image, compose.services.webhook.image, `the image compose builds (${webhook!.image})`)
  t.equal(webhook!.command, undefined, 'the webhook runs the image\'s command')

  const [migrate, ...otherInits] = pod.initContainers ?? []
  t.same(otherInits, [], 'one init container')
  t.same(migrate?.command, compose.services.migrate.command, 'it migrates as compose\'s migrate service does (node dist/migrate.js)')
  t.equal(migrate?.image, webhook!.image, 'from the same image')

  const service = only(objects, 'Service') as KubeObject & { spec: { selector: Record<string, string>, ports: unknown[], type?: string } }
  t.match(labels, service.spec.selector, 'the Service selects the pods')
  t.same(service.spec.ports, [{ name: 'http', port: 3001, targetPort: 'http', protocol: 'TCP' }], 'port 3001, named http, to the container\'s http port')

  const pdb = only(objects, 'PodDisruptionBudget') as KubeObject & { spec: { maxUnavailable: number, selector: { matchLabels: Record<string, string> } } }
  t.equal(pdb.spec.maxUnavailable, 1, 'at most one pod down at a time')
  t.match(labels, pdb.spec.selector.matchLabels, 'the budget covers the pods')
})

t.test('the NetworkPolicy example: ingress to 3001 only, egress to DNS and Postgres only', async (t) => {
  const policy = only(objects, 'NetworkPolicy') as KubeObject & {
    spec: { podSelector: { matchLabels: Record<string, string> }, policyTypes: string[], ingress: Array<{ ports: unknown[] }>, egress: Array<{ ports: Array<{ port: number, protocol: string }> }> }
  }
  t.match(deployment.spec.template.metadata.labels, policy.spec.podSelector.matchLabels, 'it selects the pods')
  t.same(policy.spec.policyTypes, ['Ingress', 'Egress'], 'both directions: what is not allowed is denied')
  t.same(policy.spec.ingress.flatMap((rule) => rule.ports), [{ port: 3001, protocol: 'TCP' }], 'ingress: TCP 3001 only')
  const egress = policy.spec.egress.flatMap((rule) => rule.ports.map((port) => `${port.protocol}/${port.port}`)).sort()
  t.same(egress, ['TCP/53', 'TCP/5432', 'UDP/53'], 'egress: DNS (UDP and TCP) and Postgres')
})
