import { join } from 'node:path'
import { SqliteQueue } from '../sqlite-queue'
import type { Queue } from '../queue'
import { tempDir } from '../../__tests__/helpers'
import { describeQueue } from './queue-conformance'

describeQueue('SQLite', {
  open: async () => new SqliteQueue(join(tempDir(), 'queue.db')),
  reopen: async (queue: Queue) => new SqliteQueue((queue as SqliteQueue).path)
})
