{{/*
Names are fixed (streamrec-api, redis, ...), not prefixed by the release: the Secret's
redis-url, the monitoring manifests (deploy/k8s/monitoring.yaml) and the recording rules
name them. So one release per namespace.
*/}}

{{/* Labels on every object. */}}
{{- define "streamrec.labels" -}}
app.kubernetes.io/part-of: streamrec
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The one image of every streamrec process; the tag defaults to the chart's appVersion. */}}
{{- define "streamrec.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Pod Security "restricted" for a pod running as `uid`. */}}
{{- define "streamrec.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .uid }}
  runAsGroup: {{ .gid }}
  fsGroup: {{ .gid }}
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "streamrec.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{/* The secrets every process reads. */}}
{{- define "streamrec.secretEnv" -}}
- name: STREAMREC_REDIS_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.secretName }}, key: redis-url}}
- name: STREAMREC_KAFKA_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .Values.secretName }}, key: kafka-sasl-password}}
{{- end -}}

{{/*
A single consumer of its group with a /metrics port: the archiver, the Spark job and the
monitor. Called with a dict: root (the chart's context), name, command (the streamrec
sub-command), values (its block of values), portEnv (the setting naming its metrics port),
dataReadOnly, env (extra variables, a list) and comment.
*/}}
{{- define "streamrec.singleConsumer" -}}
{{- $root := .root -}}
{{- $v := .values -}}
# {{ .comment }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: streamrec-{{ .name }}
  labels:
    {{- include "streamrec.labels" $root | nindent 4 }}
spec:
  replicas: 1
  strategy: {type: Recreate}  # one consumer of its group at a time
  selector:
    matchLabels: {app: streamrec-{{ .name }}}
  template:
    metadata:
      labels: {app: streamrec-{{ .name }}, app.kubernetes.io/part-of: streamrec}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $v.port | quote }}
    spec:
      {{- include "streamrec.podSecurity" (dict "uid" $root.Values.podSecurity.runAsUser "gid" $root.Values.podSecurity.runAsGroup) | nindent 6 }}
      containers:
        - name: {{ .name }}
          image: {{ include "streamrec.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .command | quote }}]
          envFrom: [{configMapRef: {name: streamrec}}]
          env:
            - {name: STREAMREC_METRICS_HOST, value: "0.0.0.0"}
            - {name: {{ .portEnv }}, value: {{ $v.port | quote }}}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- include "streamrec.secretEnv" $root | nindent 12 }}
          ports: [{containerPort: {{ $v.port }}, name: metrics}]
          livenessProbe:
            tcpSocket: {port: metrics}
            initialDelaySeconds: 60
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 6
          {{- include "streamrec.containerSecurity" $root | nindent 10 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          volumeMounts:
            - {name: state, mountPath: /state}
            - {name: data, mountPath: /data{{ if .dataReadOnly }}, readOnly: true{{ end }}}
            - {name: tmp, mountPath: /tmp}
      volumes:
        - name: state
          persistentVolumeClaim: {claimName: streamrec-state}
        - name: data
          persistentVolumeClaim: {claimName: streamrec-data}
        - name: tmp
          emptyDir: {sizeLimit: {{ $v.tmpSize }}}
{{- end -}}

{{/* Ingress to a process's /metrics port from Prometheus only. */}}
{{- define "streamrec.metricsPolicy" -}}
# The {{ .name }}'s /metrics only for Prometheus.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: streamrec-{{ .name }}
  labels:
    {{- include "streamrec.labels" .root | nindent 4 }}
spec:
  podSelector:
    matchLabels: {app: streamrec-{{ .name }}}
  policyTypes: [Ingress]
  ingress:
    - from:
        - namespaceSelector: {}
          podSelector:
            matchLabels: {app.kubernetes.io/name: prometheus}
      ports: [{port: {{ .port }}, protocol: TCP}]
{{- end -}}
