import type { Delivery } from './webhooks/payload.ts'

/**
 * The front end's own test request (contract section 8), dated `now`, as its curl builds it: no
 * user_id, one chapter. The API page offers it in "Try it out"; `npm run send -- --test` sends it.
 */
export function frontEndTestRequest (now = new Date()): Delivery {
  const at = now.toISOString().replace(/\.\d{3}Z$/, '.000Z')
  return {
    job_id: `test-auto-create-${Math.floor(now.getTime() / 1000)}`,
    status: 'completed',
    timestamp: at,
    environment: 'development',
    book_data: {
      book_title: 'Test Auto-Create Job',
      topic: 'Test',
      goal: 'Vérifier création auto',
      outline: [],
      chapters: [{ title: 'Chapitre 1', content: '# Chapitre 1\n\nTest', description: 'Test' }],
      generated_at: at,
      word_count: 100,
      chapter_count: 1,
    },
  }
}
