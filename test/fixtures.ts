import { randomUUID } from 'node:crypto'

/** A chapter of the seed's French book: accents, Markdown, an emoji. */
export function frenchChapter (n: number, paragraphs = 3) {
  const body = Array.from({ length: paragraphs }, (_, i) =>
    `Paragraphe ${i + 1} : préparez-vous à l'entretien d'embauche — « soyez ponctuel », souriez 😊 et **écoutez** attentivement.`)
  return {
    title: `Chapitre ${n}: Préparation n°${n}`,
    content: `# Chapitre ${n}\n\n## Les bases\n\n${body.join('\n\n')}\n\n- point clé\n- réussite 🎯\n`,
    description: `Comment se préparer (partie ${n})`,
  }
}

export interface BookOptions {
  jobId?: string
  chapters?: number
  userId?: string
  generatedAt?: string
  paragraphs?: number
}

/** A `completed` delivery like the Python sender's. */
export function completedDelivery (options: BookOptions = {}) {
  const chapters = Array.from({ length: options.chapters ?? 10 }, (_, i) => frenchChapter(i + 1, options.paragraphs))
  const now = new Date().toISOString()
  return {
    job_id: options.jobId ?? randomUUID(),
    status: 'completed' as const,
    timestamp: now,
    environment: 'production',
    ...(options.userId ? { user_id: options.userId } : {}),
    error: null,
    book_data: {
      book_title: '150 techniques pour réussir son entretien d\'embauche',
      topic: 'Entretien d\'embauche',
      goal: 'Aider les candidats à réussir leurs entretiens',
      outline: chapters.map((chapter) => ({ title: chapter.title, description: chapter.description })),
      chapters,
      generated_at: options.generatedAt ?? now,
      word_count: 15000,
      chapter_count: chapters.length,
    },
  }
}

export function failedDelivery (jobId: string, error = 'LLM quota exceeded', userId?: string) {
  return {
    job_id: jobId,
    status: 'failed' as const,
    timestamp: new Date().toISOString(),
    environment: 'production',
    ...(userId ? { user_id: userId } : {}),
    error,
  }
}
