import { randomUUID } from 'node:crypto'
import { countWords } from '../src/webhooks/word-count.ts'

/** What `npm run send -- --sample` and `--test` build: a delivery as the Python backend sends it. */
export interface Delivery {
  job_id: string
  status: 'completed' | 'failed'
  timestamp: string
  environment: string
  user_id?: string
  error?: string | null
  book_data?: {
    book_title: string
    topic: string
    goal: string
    outline: Array<{ title: string, description: string }>
    chapters: Array<{ title: string, content: string, description: string }>
    generated_at: string
    word_count: number
    chapter_count: number
  }
  [extra: string]: unknown
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

/** A realistic French book (five chapters, Markdown, accents, guillemets, emoji); its figures are exact. */
export function sampleDelivery (now = new Date()): Delivery {
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

/** The front end's own test request (contract section 8): no user_id, one chapter. */
export function frontEndTestDelivery (now = new Date()): Delivery {
  const at = `${now.toISOString().slice(0, 19)}.000Z`
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
