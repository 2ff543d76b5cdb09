import { randomUUID } from 'node:crypto'
import type { BookData, CompletedDelivery, Delivery } from '../src/webhooks/payload.ts'
import { countWords } from '../src/webhooks/word-count.ts'

/**
 * The deliveries this project builds, as the Python backend sends them, typed by the payload
 * schema: the tests' books, `npm run send`'s sample and test request, the benchmark's books of a
 * given size. The front end's test request (contract section 8) is the one the API page offers.
 */
export { frontEndTestRequest } from '../src/front-end-test-request.ts'

/** A chapter of the contract's French book: accents, Markdown, an emoji. */
function frenchChapter (n: number, paragraphs = 3): BookData['chapters'][number] {
  const body = Array.from({ length: paragraphs }, (_, i) =>
    `Paragraphe ${i + 1} : préparez-vous à l'entretien d'embauche — « soyez ponctuel », souriez 😊 et **écoutez** attentivement.`)
  return {
    title: `Chapitre ${n}: Préparation n°${n}`,
    content: `# Chapitre ${n}\n\n## Les bases\n\n${body.join('\n\n')}\n\n- point clé\n- réussite 🎯\n`,
    description: `Comment se préparer (partie ${n})`,
  }
}

interface BookOptions {
  jobId?: string
  userId?: string
  /** Of the French book: how many chapters (default 10), paragraphs per chapter (3), its generated_at (now). */
  chapters?: number
  paragraphs?: number
  generatedAt?: string
  /** The whole `book_data` instead of the French book. */
  book?: BookData
}

/**
 * A `completed` delivery like the Python sender's: by default the contract's French book, whose
 * `word_count` is the sender's round 15000, not the count of its chapters.
 */
export function completedDelivery (options: BookOptions = {}): CompletedDelivery {
  const now = new Date().toISOString()
  return {
    job_id: options.jobId ?? randomUUID(),
    status: 'completed',
    timestamp: now,
    environment: 'production',
    ...(options.userId ? { user_id: options.userId } : {}),
    error: null,
    book_data: options.book ?? frenchBook(options.chapters ?? 10, options.paragraphs, options.generatedAt ?? now),
  }
}

function frenchBook (chapterCount: number, paragraphs: number | undefined, generatedAt: string): BookData {
  return interviewBook(Array.from({ length: chapterCount }, (_, i) => frenchChapter(i + 1, paragraphs)), generatedAt, 15000)
}

/** The contract's book (a job-interview guide) around these chapters. */
function interviewBook (chapters: BookData['chapters'], generatedAt: string, wordCount: number): BookData {
  return {
    book_title: '150 techniques pour réussir son entretien d\'embauche',
    topic: 'Entretien d\'embauche',
    goal: 'Aider les candidats à réussir leurs entretiens',
    outline: chapters.map((chapter) => ({ title: chapter.title, description: chapter.description })),
    chapters,
    generated_at: generatedAt,
    word_count: wordCount,
    chapter_count: chapters.length,
  }
}

/** A `failed` delivery: the job's error, no book. */
export function failedDelivery (jobId: string, error = 'LLM quota exceeded', userId?: string): Delivery {
  return {
    job_id: jobId,
    status: 'failed',
    timestamp: new Date().toISOString(),
    environment: 'production',
    ...(userId ? { user_id: userId } : {}),
    error,
  }
}

interface SampleChapter { title: string, description: string, sections: Array<[heading: string, text: string]> }

const CHAPTERS: SampleChapter[] = [
  {
    title: 'Chapitre 1 : Observer son balcon avant de semer',
    description: 'Lumière, vent, poids : ce que votre balcon permet vraiment',
    sections: [
      ['Le soleil, premier critère', 'Avant d\'acheter la moindre graine, notez pendant une semaine les heures d\'ensoleillement direct. ' +
        'Un balcon orienté plein sud reçoit souvent plus de huit heures de soleil en été : tomates, poivrons et aubergines y seront à leur aise. ' +
        'Exposé à l\'est ou à l\'ouest, il convient aux salades, aux fraisiers et à la plupart des aromatiques. Au nord, misez sur la menthe, ' +
        'le persil et l\'oseille, qui se contentent de lumière indirecte.'],
      ['Le vent et la charge', 'En étage élevé, le vent dessèche la terre deux fois plus vite qu\'au sol. Prévoyez un brise-vue en canisse ' +
        'et des pots lourds, stables. Renseignez-vous aussi sur la charge admissible : un bac de 60 litres de terreau humide pèse près de ' +
        '**80 kg**. Placez les contenants les plus lourds contre le mur porteur, jamais au bord de la dalle.'],
    ],
  },
  {
    title: 'Chapitre 2 : Choisir ses contenants et son substrat',
    description: 'Pots, bacs, sacs de culture et le bon mélange de terre',
    sections: [
      ['Des pots à la bonne taille', 'La règle la plus sûre : plus le pot est grand, moins l\'arrosage est contraignant. Comptez au minimum ' +
        '20 litres pour un pied de tomate, 10 litres pour un poivron, 5 litres pour un basilic. Les sacs de culture en géotextile, légers et ' +
        'respirants, évitent l\'excès d\'eau au fond du pot — la première cause de pourriture des racines.'],
      ['Un substrat vivant', 'Mélangez deux tiers de terreau de qualité « agriculture biologique » et un tiers de compost mûr. ' +
        'Ajoutez une poignée de billes d\'argile au fond pour le drainage, puis paillez la surface avec de la paille de lin : ' +
        'la terre reste fraîche et vous arrosez moins souvent.\n\n- terreau : 2/3\n- compost : 1/3\n- paillage : 3 à 5 cm'],
    ],
  },
  {
    title: 'Chapitre 3 : Semer et planter au bon moment',
    description: 'Un calendrier simple, du mois de mars à la fin de l\'été',
    sections: [
      ['Le calendrier du balconnier', 'En mars, semez à l\'intérieur tomates et piments, près d\'une fenêtre lumineuse. En avril, installez ' +
        'dehors radis, épinards et laitues, qui supportent encore les nuits fraîches. Attendez la mi-mai, après les « saints de glace », ' +
        'pour sortir les plants frileux. En juillet, ressemez des salades d\'automne et des mâches pour prolonger la récolte.'],
      ['Repiquer sans stress', 'Arrosez les godets une heure avant le repiquage, enterrez les tomates jusqu\'aux premières feuilles : ' +
        'de nouvelles racines se formeront le long de la tige. Plantez de préférence en fin de journée, pour que les plants ' +
        's\'installent à l\'abri du soleil de midi. 🌱'],
    ],
  },
  {
    title: 'Chapitre 4 : Arroser, nourrir, protéger',
    description: 'Les gestes hebdomadaires qui font la différence',
    sections: [
      ['L\'arrosage', 'Arrosez au pied, tôt le matin, jusqu\'à ce que l\'eau s\'écoule par le fond du pot. Un doigt enfoncé dans la terre ' +
        'vaut mieux que tous les calendriers : si elle est sèche sur deux centimètres, il est temps. Pendant les vacances, un système ' +
        'de mèches ou des oyas en terre cuite tiennent une dizaine de jours.'],
      ['Engrais et auxiliaires', 'Toutes les deux semaines, diluez un engrais liquide riche en potasse pour les légumes-fruits. ' +
        'Contre les pucerons, une pulvérisation de savon noir suffit le plus souvent ; mieux encore, installez quelques fleurs ' +
        '(capucines, soucis, œillets d\'Inde) qui attirent coccinelles et syrphes, vos alliés les plus efficaces.'],
    ],
  },
  {
    title: 'Chapitre 5 : Récolter et recommencer',
    description: 'Cueillir au bon stade et préparer la saison suivante',
    sections: [
      ['Cueillir souvent', 'Une courgette se récolte à 15 cm, un haricot avant que ses grains ne gonflent, une tomate quand elle cède ' +
        'légèrement sous le doigt. Plus vous cueillez, plus la plante produit. Les herbes se taillent au-dessus d\'une paire de feuilles, ' +
        'ce qui les fait ramifier.'],
      ['Préparer l\'hiver', 'À l\'automne, videz les pots des cultures épuisées, émiettez la vieille terre et mélangez-la à du compost ' +
        'frais. Semez un engrais vert (phacélie, moutarde) ou couvrez de feuilles mortes : au printemps, votre substrat sera prêt ' +
        'pour une nouvelle saison. Bonne récolte ! 🍅'],
    ],
  },
]

function chapterMarkdown (chapter: SampleChapter, number: number): string {
  const sections = chapter.sections.map(([heading, text]) => `## ${heading}\n\n${text}`)
  return `# ${chapter.title.replace(/^Chapitre \d+ : /, `Chapitre ${number} — `)}\n\n${sections.join('\n\n')}\n`
}

/** `npm run send -- --sample`: a realistic French book (five chapters, Markdown, accents, guillemets, emoji); its figures are exact. */
export function sampleDelivery (now = new Date()): CompletedDelivery {
  const at = now.toISOString()
  const chapters = CHAPTERS.map((chapter, i) => ({
    title: chapter.title,
    content: chapterMarkdown(chapter, i + 1),
    description: chapter.description,
  }))
  return {
    job_id: randomUUID(),
    status: 'completed',
    timestamp: at,
    environment: 'development',
    error: null,
    book_data: {
      book_title: 'Le potager sur mon balcon : cultiver ses légumes en ville',
      topic: 'Jardinage urbain',
      goal: 'Permettre aux citadins de récolter leurs propres légumes sur quelques mètres carrés',
      outline: CHAPTERS.map((chapter) => ({ title: chapter.title, description: chapter.description })),
      chapters,
      generated_at: at,
      word_count: chapters.reduce((sum, chapter) => sum + countWords(chapter.content), 0),
      chapter_count: chapters.length,
    },
  }
}

// French prose with accents, an emoji and Markdown, like the contract's book. No ':' is followed
// by a letter: pgbench would read ":word" as a variable in the benchmark's floor script.
const BENCH_PARAGRAPH = 'Préparez-vous à l\'entretien d\'embauche — « soyez ponctuel », souriez 😊 et **écoutez** ' +
  'attentivement la question avant de répondre. Un candidat qui reformule montre qu\'il a compris ; ' +
  'il gagne aussi quelques secondes pour structurer sa réponse en trois points clairs.'

/**
 * The benchmark's book: `chapterCount` chapters of even size, the whole delivery's body close to
 * `bodyBytes`; its `word_count` is exact (the service's count).
 */
export function bookOfSize (chapterCount: number, bodyBytes: number): BookData {
  const perChapter = Math.max(200, Math.floor(bodyBytes / chapterCount) - 150)
  const chapters = Array.from({ length: chapterCount }, (_, i) => {
    const n = i + 1
    let content = `# Chapitre ${n}\n\n## Les bases\n\n`
    let paragraph = 1
    while (Buffer.byteLength(content) + Buffer.byteLength(BENCH_PARAGRAPH) + 20 < perChapter) {
      content += `${paragraph++}. ${BENCH_PARAGRAPH}\n\n`
    }
    content += '- point clé\n- réussite 🎯\n'
    return { title: `Chapitre ${n} - Préparation n°${n}`, content, description: `Comment se préparer (partie ${n})` }
  })
  return interviewBook(chapters, '2025-10-20T10:23:34.861Z', chapters.reduce((sum, chapter) => sum + countWords(chapter.content), 0))
}
