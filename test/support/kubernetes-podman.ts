import { stringify } from 'yaml'
import type { DeploymentObject, KubeObject } from './kubernetes.ts'

interface PodmanOverlay {
  /** Makes this run's object names its own (pods, ConfigMaps and volumes are global to podman). */
  runId: string
  /** One loopback port per pod: they share the host's network. */
  ports: number[]
  databaseUrl: string
  webhookSecret: string
}

/**
 * The test-only overlay that lets `podman kube play` (podman 4.3.1) run the base on one machine,
 * rendered here rather than by kustomize (podman takes plain YAML, and kustomize is not installed).
 * Everything else of the base goes to podman as it is: the image, the init container, the commands,
 * the security contexts, the probes, the memory limit. Each change says what podman does otherwise:
 *
 * - The Deployment becomes one Pod per replica, with `restartPolicy: OnFailure`: podman applies a
 *   Deployment's `Always` to the init container too, restarts it after it exits 0, and the play
 *   fails ("failed to remove once init container … as it is running").
 * - `hostNetwork`: the host's Postgres listens on 127.0.0.1. So the ports list goes (podman:
 *   "PortMappings can only be used with Bridge or slirp4netns networking") and each pod listens
 *   on a port of its own, on 127.0.0.1 only.
 * - A ConfigMap per pod, with its PORT and HOST: podman gives `envFrom` precedence over `env`
 *   (Kubernetes does the opposite), so a per-pod `env` could not override the shared ConfigMap.
 * - The Secret becomes a ConfigMap of the same keys: podman 4.3.1 refuses `envFrom.secretRef`
 *   ("secret … is not valid JSON") whatever form the Secret takes.
 * - No memory request: podman sets it as the cgroup's soft limit, which Node reports as its
 *   constrained memory, so the load shedder would work from the request instead of the limit.
 *   The kubelet sets no such limit (cgroup v1, and v2 without the alpha MemoryQoS gate).
 * - The emptyDir's name is this pod's own: podman makes a named volume of it.
 *
 * One file per pod (its ConfigMaps beside it), so that both can be played at once: their init
 * containers then race for the migration lock, as two replicas of a rollout do (one kube play
 * makes its pods one after the other). Services and disruption budgets mean nothing to podman
 * (kube play skips them): they go in the first file as they are.
 */
export function podmanOverlay (base: KubeObject[], overlay: PodmanOverlay): KubeObject[][] {
  const deployment = base.find((object) => object.kind === 'Deployment') as DeploymentObject
  const configMap = base.find((object) => object.kind === 'ConfigMap') as KubeObject & { data: Record<string, string> }
  const secretName = deployment.spec.template.spec.containers[0]!.envFrom!.find((source) => source.secretRef)!.secretRef!.name
  const fromSecret = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: `${secretName}-${overlay.runId}-secret` },
    data: { DATABASE_URL: overlay.databaseUrl, WEBHOOK_SECRET: overlay.webhookSecret },
  }

  const rest = base.filter((object) => !['Deployment', 'ConfigMap'].includes(object.kind))
  return overlay.ports.map((port, index) => {
    const name = `${deployment.metadata.name}-${overlay.runId}-${index}`
    const settings = { ...configMap, metadata: { ...configMap.metadata, name }, data: { ...configMap.data, PORT: String(port), HOST: '127.0.0.1' } }
    const spec = structuredClone(deployment.spec.template.spec)
    const volumes = spec.volumes as Array<{ name: string }>
    const renamed = new Map(volumes.map((volume) => [volume.name, `${name}-${volume.name}`]))
    for (const volume of volumes) volume.name = renamed.get(volume.name)!
    for (const container of [...spec.initContainers ?? [], ...spec.containers]) {
      container.envFrom = container.envFrom!.map((source) => source.secretRef
        ? { configMapRef: { name: fromSecret.metadata.name } }
        : { configMapRef: { name } })
      delete container.ports
      const resources = container.resources as { requests?: Record<string, string> } | undefined
      delete resources?.requests?.memory
      for (const mount of container.volumeMounts as Array<{ name: string }>) mount.name = renamed.get(mount.name)!
    }
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, labels: { ...deployment.spec.template.metadata.labels } },
      spec: { ...spec, hostNetwork: true, restartPolicy: 'OnFailure' },
    }
    return [fromSecret, settings, pod, ...(index === 0 ? rest : [])]
  })
}

/** Objects as one multi-document YAML file, as `podman kube play` and `kube down` read it. */
export const toYaml = (objects: KubeObject[]) => objects.map((object) => stringify(object)).join('---\n')
