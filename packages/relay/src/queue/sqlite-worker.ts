/** The worker thread of `ThreadedSqliteQueue`: owns one `SqliteQueue` and answers calls in the order they come. */
import { parentPort, workerData } from 'node:worker_threads'
import { SqliteQueue } from './sqlite-queue'
import { QueueThreadError, toWire, type Call, type Reply, type WorkerInput } from './sqlite-thread'

const input = workerData as WorkerInput
const port = parentPort
if (!port) throw new QueueThreadError("sqlite-worker runs only as the worker thread of the relay's SQLite queue")
let queue: SqliteQueue | undefined
let openError: unknown
try {
  queue = new SqliteQueue(input.path, input.options)
} catch (error) {
  // Answered to every call (the relay reports it as a failing queue), rather than a crash with no reply.
  openError = error
}

port.on('message', (call: Call) => {
  void (async () => {
    let reply: Reply
    try {
      if (!queue) throw openError
      const method = queue[call.method] as (...args: unknown[]) => unknown
      reply = { id: call.id, result: await method.apply(queue, call.args) }
    } catch (error) {
      reply = { id: call.id, error: toWire(error) }
    }
    port.postMessage(reply)
    if (call.method === 'close') port.close()
  })()
})
