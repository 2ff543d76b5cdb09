import { countWords } from '../src/webhooks/word-count.ts'

/** Book sizes the benchmark knows: chapters and the target size of the whole body. */
export const SIZES = {
  '10k': { chapters: 1, bodyBytes: 10_000 },
  '94k': { chapters: 10, bodyBytes: 94_000 },
  '1m': { chapters: 100, bodyBytes: 1_000_000 },
  '10m': { chapters: 100, bodyBytes: 10_000_000 },
} as const
export type SizeName = keyof typeof SIZES

export const BENCH_USER_ID = 'bench-user'

// French prose with accents, an emoji and Markdown, like the seed's book. No ':' is followed by a
// letter: pgbench would read ":word" as a variable in the floor script.
const PARAGRAPH = 'Préparez-vous à l\'entretien d\'embauche — « soyez ponctuel », souriez 😊 et **écoutez** ' +
  'attentivement la question avant de répondre. Un candidat qui reformule montre qu\'il a compris ; ' +
  'il gagne aussi quelques secondes pour structurer sa réponse en trois points clairs.'

export interface BenchChapter { title: string, description: string, content: string, words: number }

export interface BenchBook {
  title: string
  topic: string
  goal: string
  outline: Array<{ title: string, description: string }>
  chapters: BenchChapter[]
  generatedAt: string
}

/** A book whose JSON body is close to `bodyBytes`, split evenly into `chapters` chapters. */
export function makeBook (chapterCount: number, bodyBytes: number): BenchBook {
  const perChapter = Math.max(200, Math.floor(bodyBytes / chapterCount) - 150)
  const chapters = Array.from({ length: chapterCount }, (_, i) => {
    const n = i + 1
    let content = `# Chapitre ${n}\n\n## Les bases\n\n`
    let paragraph = 1
    while (Buffer.byteLength(content) + Buffer.byteLength(PARAGRAPH) + 20 < perChapter) {
      content += `${paragraph++}. ${PARAGRAPH}\n\n`
    }
    content += '- point clé\n- réussite 🎯\n'
    return {
      title: `Chapitre ${n} - Préparation n°${n}`,
      description: `Comment se préparer (partie ${n})`,
      content,
      words: countWords(content),
    }
  })
  return {
    title: '150 techniques pour réussir son entretien d\'embauche',
    topic: 'Entretien d\'embauche',
    goal: 'Aider les candidats à réussir leurs entretiens',
    outline: chapters.map((chapter) => ({ title: chapter.title, description: chapter.description })),
    chapters,
    generatedAt: '2025-10-20T10:23:34.861Z',
  }
}

/** The delivery a sender would post for this book. */
export function deliveryBody (book: BenchBook, jobId: string): string {
  return JSON.stringify({
    job_id: jobId,
    status: 'completed',
    timestamp: new Date().toISOString(),
    environment: 'production',
    user_id: BENCH_USER_ID,
    error: null,
    book_data: {
      book_title: book.title,
      topic: book.topic,
      goal: book.goal,
      outline: book.outline,
      chapters: book.chapters.map(({ title, content, description }) => ({ title, content, description })),
      generated_at: book.generatedAt,
      word_count: book.chapters.reduce((sum, chapter) => sum + chapter.words, 0),
      chapter_count: book.chapters.length,
    },
  })
}
