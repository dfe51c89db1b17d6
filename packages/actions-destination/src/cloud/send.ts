import {
  IntegrationError,
  InvalidAuthenticationError,
  MultiStatusResponse,
  PayloadValidationError,
  RetryableError,
  getErrorCodeFromHttpStatus,
  type ExecuteInput,
  type RequestClient
} from '@segment/actions-core'
import { transformBatch } from '@segment/actions-core/mapping-kit'
import {
  actions,
  DESTINATION_NAMES,
  buildRequest,
  classifyResponse,
  finishRoutes,
  packBatches,
  PayloadTooLargeError,
  resolveSettings,
  type ResolvedSettings,
  toBatchItem,
  utf8ByteLength,
  validatePayload,
  ONEFLOW_LIMITS,
  type ActionKey,
  type ApiTarget,
  type Command,
  type Decision,
  type OneFlowRequest,
  type Outcome,
  type SegmentEvent,
  type CloudSettings as Settings
} from '@oneflow-seg/core'

// The runtime also passes the original event(s) and mapping, which ExecuteInput's type leaves out.
type Input = ExecuteInput<Settings, unknown> & { readonly rawData?: unknown }
type BatchInput = ExecuteInput<Settings, unknown[]> & { readonly rawData?: unknown; readonly rawMapping?: unknown }

const RETRYABLE = new Set([408, 423, 429, 500, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511, 598, 599])

/** What `perform` returns for an event that is deliberately not sent (never an error, never retried). */
export interface SkippedResult {
  readonly skipped: true
  readonly reason: string
  readonly message: string
}

function outcomeFor(actionKey: ActionKey, payload: unknown, raw: unknown, target: ResolvedSettings): Outcome {
  const event = (typeof raw === 'object' && raw !== null ? raw : {}) as SegmentEvent
  return finishRoutes(event, [{ subscription: actions[actionKey].title, actionKey, payload }], {
    integrationName: DESTINATION_NAMES.cloud,
    consentCategories: target.consentCategories
  })[0]!.outcome
}

interface Answer {
  readonly status: number
  readonly retryAfter: string | null
  readonly location: string | null
  readonly body: unknown
}

/** One POST through the framework's request client; a timeout or a dropped connection becomes a RetryableError. */
async function post(request: RequestClient, req: OneFlowRequest): Promise<Answer> {
  let response: Response & { data?: unknown; content?: string }
  try {
    // A redirect is never followed: the api_key header would go wherever 1Flow's answer points.
    response = await request(req.url, {
      method: 'POST',
      headers: { ...req.headers },
      body: req.body,
      throwHttpErrors: false,
      redirect: 'manual'
    })
  } catch (error) {
    const timedOut =
      /timeout|timed out|abort/i.test(String((error as Error)?.message ?? error)) ||
      (error as { code?: string }).code === 'ETIMEDOUT'
    throw new RetryableError(
      `1Flow did not answer (${timedOut ? 'timeout' : 'connection failed'}); Segment will retry.`,
      timedOut ? 408 : 503
    )
  }
  return {
    status: response.status,
    retryAfter: response.headers.get('retry-after'),
    location: response.headers.get('location'),
    body: response.data ?? response.content
  }
}

function oneFlowMessage(body: unknown): string {
  const raw =
    typeof body === 'object' && body !== null
      ? ((body as { error?: unknown; message?: unknown }).error ??
        (body as { message?: unknown }).message ??
        JSON.stringify(body))
      : body
  return String(raw ?? '').slice(0, 300)
}

/** The framework's error for a 1Flow response that is not a success (docs/delivery.md, in Segment's terms). */
function errorFor(answer: Answer, decision: Exclude<Decision, { action: 'deliver' }>): Error {
  const { status } = answer
  switch (decision.action) {
    case 'pause':
      if (decision.cause === 'redirect')
        return new IntegrationError(`${decision.reason}.`, 'REDIRECT_NOT_FOLLOWED', status)
      return new InvalidAuthenticationError(
        `1Flow refused the project API key (${status}); check the Project API Key setting.`
      )
    case 'retry': {
      const after = answer.retryAfter ? `; Retry-After: ${answer.retryAfter}` : ''
      const code = (RETRYABLE.has(status) ? status : 500) as ConstructorParameters<typeof RetryableError>[1]
      return new RetryableError(`1Flow answered ${status}${status === 429 ? ' (rate limited)' : ''}${after}`, code)
    }
    case 'split':
      return new IntegrationError(
        '1Flow refused the request as too large (413); one event must stay under 32 KB.',
        'PAYLOAD_TOO_LARGE',
        413
      )
    case 'dead-letter':
      return new IntegrationError(
        `1Flow refused the request (${status}): ${oneFlowMessage(answer.body)}`,
        getErrorCodeFromHttpStatus(status),
        status
      )
  }
}

function requestFor(cmd: Command, target: ApiTarget): OneFlowRequest {
  try {
    return buildRequest(cmd, target)
  } catch (error) {
    if (error instanceof PayloadTooLargeError) throw new IntegrationError(error.message, 'PAYLOAD_TOO_LARGE', 413)
    throw error
  }
}

/** `perform`: one event, one request to `/identify` or `/track`, built by core's HTTP contract. */
export async function sendOne(actionKey: ActionKey, request: RequestClient, data: Input): Promise<unknown> {
  const target = resolveSettings(data.settings)
  const outcome = outcomeFor(actionKey, data.payload, data.rawData, target)
  if (outcome.kind === 'skip')
    return { skipped: true, reason: outcome.reason, message: outcome.message } satisfies SkippedResult
  if (outcome.kind === 'invalid') throw new PayloadValidationError(outcome.error.message)
  const answer = await post(request, requestFor(outcome, target))
  const decision = classifyResponse(answer)
  if (decision.action !== 'deliver') throw errorFor(answer, decision)
  return answer.body
}

/**
 * The raw event behind each payload. `rawData` keeps events the framework dropped as invalid, `payload`
 * does not; when they differ, the dropped ones are found again with the same mapping and field checks.
 * If that still does not line up, no event is guessed (timestamps are then left to 1Flow).
 */
function alignRawEvents(actionKey: ActionKey, data: BatchInput): unknown[] {
  const raw = Array.isArray(data.rawData) ? (data.rawData as unknown[]) : []
  if (raw.length === data.payload.length) return raw
  const mapped = transformBatch(
    (data.rawMapping ?? data.mapping ?? {}) as Parameters<typeof transformBatch>[0],
    raw as never
  )
  const kept = raw.filter((_, i) => {
    try {
      validatePayload(actions[actionKey].fields, mapped[i])
      return true
    } catch {
      return false
    }
  })
  return kept.length === data.payload.length ? kept : []
}

interface Item {
  readonly index: number
  readonly cmd: Command
}

/** `performBatch`: valid payloads packed into `/batch` requests of at most 480 KB; one multistatus entry per payload. */
export async function sendBatch(
  actionKey: ActionKey,
  request: RequestClient,
  data: BatchInput
): Promise<MultiStatusResponse> {
  const target = resolveSettings(data.settings)
  const raw = alignRawEvents(actionKey, data)
  const result = new MultiStatusResponse()
  const items: Item[] = []
  data.payload.forEach((payload, index) => {
    const outcome = outcomeFor(actionKey, payload, raw[index], target)
    if (outcome.kind === 'skip') {
      result.setSuccessResponseAtIndex(index, {
        status: 200,
        sent: {},
        body: { skipped: true, reason: outcome.reason, message: outcome.message }
      })
    } else if (outcome.kind === 'invalid') {
      result.setErrorResponseAtIndex(index, {
        status: 400,
        errortype: 'PAYLOAD_VALIDATION_FAILED',
        errormessage: outcome.error.message
      })
    } else items.push({ index, cmd: outcome })
  })
  // The mapping's batch_size caps events per request, as it caps what Segment's platform hands in.
  const batchSize = (data.payload[0] as { batch_size?: unknown } | undefined)?.batch_size
  const { batches, tooLarge } = packBatches(
    items.map((i) => i.cmd),
    target,
    undefined,
    typeof batchSize === 'number' && batchSize >= 1 ? batchSize : undefined
  )
  for (const j of tooLarge) {
    const { index, cmd } = items[j] as Item
    const bytes = utf8ByteLength(JSON.stringify(toBatchItem(cmd)))
    result.setErrorResponseAtIndex(index, {
      status: 413,
      errortype: 'PAYLOAD_TOO_LARGE',
      errormessage: new PayloadTooLargeError(bytes, ONEFLOW_LIMITS.maxRequestBytes).message
    })
  }
  for (const batch of batches)
    await sendGroup(
      request,
      target,
      batch.indices.map((j) => items[j] as Item),
      result
    )
  return result
}

async function sendGroup(
  request: RequestClient,
  target: ApiTarget,
  group: readonly Item[],
  result: MultiStatusResponse
): Promise<void> {
  const req = packBatches(
    group.map((i) => i.cmd),
    target
  ).batches[0]!.request
  let answer: Answer
  try {
    answer = await post(request, req)
  } catch (error) {
    const e = error as RetryableError
    for (const { index } of group)
      result.setErrorResponseAtIndex(index, {
        status: e.status ?? 503,
        errortype: 'RETRYABLE_ERROR',
        errormessage: e.message
      })
    return
  }
  const decision = classifyResponse(answer)
  if (decision.action === 'deliver') {
    for (const { index, cmd } of group)
      result.setSuccessResponseAtIndex(index, {
        status: answer.status,
        sent: toBatchItem(cmd) as never,
        body: answer.body as never
      })
    return
  }
  // 413, 400 or another 4xx on a batch: halve it and try each half, so one bad event never takes its neighbours
  // with it; only a lone event that is still refused is reported with 1Flow's answer.
  if ((decision.action === 'split' || decision.action === 'dead-letter') && group.length > 1) {
    const half = Math.ceil(group.length / 2)
    await sendGroup(request, target, group.slice(0, half), result)
    await sendGroup(request, target, group.slice(half), result)
    return
  }
  const error = errorFor(answer, decision) as IntegrationError
  const errortype = decision.action === 'retry' ? 'RETRYABLE_ERROR' : (error.code as never)
  for (const { index } of group)
    result.setErrorResponseAtIndex(index, { status: answer.status, errortype, errormessage: error.message })
}
