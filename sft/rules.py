r"""
The offline backend of sft/sft_generate.py: question/answer pairs read off the facts an article states
outright, found with word lists and regular expressions instead of a model.

    python sft/sft_generate.py --backend=rules --input_dir=data/people_daily   # the pairs of a whole corpus
    python sft/rules.py "长江是中国第一长河。故宫位于北京市中心。"   # what the rules find in one text
    python sft/rules.py "$(printf '王家坝\n\n王家坝是安徽省阜南县的一个行蓄洪区。')"   # an entry: title, blank line, body

Why rules and not a model: they run offline in seconds, with no server and no key; the same articles give the
same bytes on every run; and every answer is a verbatim span of the article, so the tiny model trained on them
memorises what the text says, never a paraphrase or an invention.

What they ask: a fact stated in one clause, by that clause's own subject, with a short answer copied from the
text: X是什么？ (or 是谁？; and for "X是<the only Y>" also Y是什么？ -> X), X位于哪里？, X被誉为什么？,
X成立于何时？, X于何时<verb>？, <event>是在什么时候？, X达多少<unit>？, X在哪里举行？, 美国总统是谁？.
A clause whose subject is a pronoun, adverb, verb, time word, number or bare generality asks nothing.
An encyclopedia entry ("<title>\n\n<body>", as Wikipedia dumps are) is first asked about its title, from the
clauses of its opening sentence: <title>是什么？ (or 是谁？), <title>简称/又称/字什么？, <title>位于哪里？, ...
next_sentence=True adds “<sentence>”的下一句是什么？ pairs (recall, not facts).

This module only finds candidates; the second and third commands print them all, one JSON object a line.
sft_generate.py then keeps those that pass the checks every pair passes (lengths, pronouns, grounding), asks
each question once in the whole output, and keeps at most --max_pairs of them per article.
"""
import json
import re
import sys

# a question must make sense without the article; 其他/应该/因此 are ordinary words, not references. Defined here
# because sft_generate.py, which checks every question with it, imports this module (and not the other way)
_PRONOUN = re.compile(r'(?<!其)[他她它]|这|(?<![应活])该|(?<![因如彼])此|本文|文中|原文|文章|上文')

# Each rule reads one clause (the text between ，；：。！？) and copies a short span of it as the answer. Without a
# parser, a subject X is told from a pronoun, adverb, verb or fragment by its ends: _NOUN_END holds characters that
# end nouns (>= 90% of the 2+ character words ending in one are nouns in PKU's tagged People's Daily of January
# 1998; plus heads such as 业 or 场 whose verbs, 就业 or 在场, the other checks catch), _X_BAD_START the words a
# clause without a subject begins with (pronouns, conjunctions, prepositions, adverbs, verbs, relative times).
_SENTENCE_END = re.compile(r'[。！？]+[”’」』）]*')  # a closing quote after 。 belongs to its sentence
_CLAUSE = re.compile(r'[^，；：,;:。！？]+')
_LEAD = re.compile(r'^(?:[（(][一二三四五六七八九十\d０-９]+[)）]|[一二三四五六七八九十\d０-９]+[、.．]|[●○■□◆◇△▲★☆※·—-]+)?'
                   r'(?:而且|而|但是|但|并且|并|同时|因此|所以|其实|当然|然而|不过|此外|另外|可见|于是|因而|从而|可是|总之|据悉)?')
_D = '[0-9０-９一二三四五六七八九十○〇零]'
_DATE = rf'(?:{_D}{{2,4}}年(?:{_D}{{1,2}}月(?:{_D}{{1,3}}日)?)?|{_D}{{1,2}}月(?:{_D}{{1,3}}日)?)(?:上旬|中旬|下旬|初|底|末)?'
_AMOUNT = (r'[0-9０-９][0-9０-９．.·]*[十百千万亿]*[多余]?(?P<u>％|%|倍|[亿万]?美元|港元|日元|[亿万]?元|平方公里|平方米|公顷|公里|'
           r'千米|米|公斤|千克|吨|亩|万人次|人次|万人|人|名|位|个|家|所|座|台|辆|架|艘|部|件|项|户|条|种|次|届|岁|天|千瓦|立方米)')
_NOUN_END = set('国会者民区济员子市品题术性界司义京府社院队程委族众局位村省统央金志团件片亚势构海融政史况率技策县州神洲东象南斯港'
                '士克山源础域球党西权段文协师器币厂湾江林略兵闻城镇尔夫料站德因油馆庭绩河园态景客才女牌警联室友阳田兰券素针科店厅'
                '贸脑例艺星胞津曲琛坦号食材菜原龙宁积库川桥英拉灯迹土卡官楼纸尼琴潮汉帜箱伴疆波坛基群径昌雄岛哥维峰络森峡板姓伯讯'
                '氛梁臣石塔野涛角虎籍胡侨母祥杰仁庄宾宝邦宅圳剂卿湖妈谊械黎弟屋娘爷罗柱妇沙钦肉寺姆泉恩姐宫木辆忠谷徽玉芳欧巴棚'
                '铁王敦丹辈珍牙旨滨稻溪堡厦慧奶棋萨曼洞仙阁钢徒勒寨斌栋妹麦珠孙廊症舶滩企盟》”'
                '业场家人路物长校节部心台议约法报刊奖杯剧车机线额量值度务标制学字目亲役益系门户版票款房质格体军乡网病情墙关华')
_PLACE_END = set('国省市县区州镇乡村岛山河江湖海港湾京津南北东西阳宁川庆门城洲亚宫')  # a bare two-character X must be a place
_OWNER = _PLACE_END | set('院部委局厅团社司行党军站场厂馆所华美英法德日俄“《')  # an amount or a title needs an owner
_QTY_END = set('量额数率值入出口价格资金费税息积度重长高宽深产债款')  # what "X达N" measures: 产量, 总额, 人数, 面积...
_SURNAME = set('王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜'
               '崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤迟尉伍乔齐楼关'
               '梅柳殷傅葛聂鲍邢焦岳翁饶樊凌卓屈蒲穆祝裴俞倪缪')
_FOREIGN = set('阿埃艾安奥巴贝比波伯布达德迪蒂多恩尔法菲费弗福戈格哈汉赫胡基吉加杰卡凯科克库拉莱兰朗勒雷里利林隆卢鲁伦罗洛马'
               '迈曼梅蒙米莫穆纳内尼努帕佩皮普奇乔切萨塞桑沙什斯苏索塔泰特图托瓦威韦维温沃乌西希谢休雅亚耶伊因约泽扎诺顿')
_ROLE = ('主席|总理|总统|首相|外长|外交部长|部长|委员长|总书记|书记|发言人|主任|省长|市长|县长|州长|院长|校长|局长|厂长|行长|'
         '社长|台长|所长|馆长|总经理|董事长|理事长|总裁|大使|秘书长|议长|国王|司令员|政委|主编|会长|团长|队长|主教练')
_X_BAD_START = tuple(
    '这 那 此 该 其 他 她 它 本 我 你 您 咱 但 而 并 且 因 据 是 会 想 看 说 要 让 使 把 被 对 '
    '从 向 为 以 当 在 有 就 还 也 都 又 才 却 如 若 即 乃 于 与 及 或 不 没 未 只 仅 更 最 很 '
    '太 已 曾 将 正 总 多 各 每 某 诸 另 凡 连 甚 竟 便 亦 副 到 由 占 刚 所以 如果 虽然 同时 另外 '
    '目前 今年 去年 明年 当时 现在 如今 今天 昨天 明天 上次 首次 近年 近日 日前 最近 此前 过去 通过 经过 '
    '随着 根据 按照 关于 为了 由于 作为 面对 针对 除了 一是 二是 三是 一方面 特别 尤其 主要 其中 大家 人们 '
    '有人 有的 有些 一些 不少 许多 很多 大量 一批 一位 一个 一种 一项 一次 一般 一直 一定 一旦 一度 可以 '
    '可能 应该 应当 必须 需要 希望 认为 表示 指出 强调 说明 证明 表明 显示 看来 据说 听说 坚持 加强 提高 '
    '促进 实现 建立 担任 成为 随同 陪同 足以 比如 例如 预计 估计 无论 不论 不管 即使 哪怕 只有 只要 除非 全市 '
    '全县 全省 全区 全村 全乡 全镇 全厂 全院 全校 全年'.split())
_X_VERBISH = re.compile('[得了着]|今年|去年|明年|目前|当时|现在|如今|近年|日前|最近|此前|已经|仍然|始终|一直|曾经|正在|将要|可以|'
                        '中有|不是|就是|也是|认为|表示|指出|觉得|知道|发现|看到|提出|强调|希望|决定|宣布')
_VAGUE_END = tuple('原因 结果 目的 关键 问题 重点 核心 任务 目标 意义 办法 途径 要求 出路 根源 原则 前提 基础 条件 措施 做法 经验 '
                   '特点 作用 情况 方面 工作 对象 内容 话题 方式 方法 形式 关系 事情 事实 现象 结论 标志 根本 本质 部分 东西 地方 '
                   '主题'.split())  # "X是Y" asks about such an X only when it has an owner: 中科院的目标
_Y_BAD_START = tuple('否 非 的 地 得 不 在 也 都 就 还 又 才 却 被 把 将 为 从 向 对 于 要 应 能 会 可 因为 由于 为了 那样 这样 '
                     '一样 怎样 第一次 首次 成为'.split())
_ASKING = re.compile(r'[？?]|怎|什么|哪|谁|吗|呢|为何|如何|多少')  # a question is no answer
_X = r'(?P<x>.{2,14}?)'
RULES = [  # (name, regex matching a whole clause, question); the answer is group y, verbatim
    ('where', _X + r'(?:位于|地处|坐落在|坐落于)(?P<y>.{2,20})', '{x}位于哪里？'),
    ('name', _X + r'(?P<v>被誉为|被称为|被称作|被评为|号称|简称|又称|又名|原名|别称|俗称)(?P<y>[^的]{2,20})', '{x}{v}什么？'),
    ('founded', _X + r'(?P<v>成立|建立|建成|始建|兴建|创建|创办|创立|诞生|出生|落成|竣工|开通|通车|投产|开业|开馆)于(?P<y>'
     + _DATE + ')', '{x}{v}于何时？'),
    ('when', _X + r'(?P<m>将|已|曾|正式|已经)?于(?P<y>' + _DATE + r')(?P<v>[^\d０-９年月日底初末前后中至到起以于在、][^于在]{1,13}'
     r'(?<!宣布|表示|指出|认为|决定|提出|开始|进行))', '{x}{m}于何时{v}？'),
    ('amount', _X + r'(?P<m>已|已经|将|可|也|仍|共|约|均|再|还|就|可望|比上年|比去年|同比|比上年同期|较上年)?(?P<v>达到|达|高达|约为|'
     r'为|是|超过|突破|增长|增加|下降|减少|占|总计|累计|合计)(?P<y>' + _AMOUNT + ')', '{x}{m}{v}多少{u}？'),
    ('won', _X + r'(?P<m>曾|先后|多次|再次|还|也)?(?P<v>荣获|获得|被授予|当选为|当选|被选为|被任命为|出任)(?P<y>.{2,16})',
     '{x}{m}{v}什么？'),
    ('held', _X + r'(?P<m>将|已|也|还|正式)?在(?P<y>[^在]{2,16}?)(?:隆重|正式|同时)?(?P<v>举行|召开|开幕|闭幕|举办|揭幕|落成|'
     r'展出|上演|开业)', '{x}{m}在哪里{v}？'),
    ('is', _X + r'(?P<m>原|曾|曾经)?(?:也|又|则|既|就|便|即|正|更|还|都|乃|只|才|本来|原本|其实|确实|无疑|实际上)?是'
     r'(?P<y>[^是]{2,20})', '{x}{m}是{who}？'),  # 也/又/就...: dropped from the question
]
RULES = [(name, re.compile(pattern), question) for name, pattern, question in RULES]
_DATED = re.compile(f'(?P<y>{_DATE})(?:凌晨|上午|中午|下午|傍晚|晚上|晚|夜间|早晨|清晨)?')  # "１月５日，<event>。"
_TITLED = re.compile(r'(?:^|(?<=[，。、：；“（了与和同及向对由给]))(?P<x>(?P<o>[\u4e00-\u9fff]{2,10}?)(?:' + _ROLE + r'))'
                     r'(?P<y>[\u4e00-\u9fff·]{2,8}?)(?=今天|昨天|日前|近日|在|说|表示|指出|强调|会见|出席|主持|担任|举行|访|来访|来华|发来|率|'
                     r'等|一行|致|向|对|与|和|同|[，。、：；（])')  # 美国总统克林顿今天…
_UNIQUE = re.compile('最|唯一|第一|首都|省会|首府|故乡|发源地')  # "X是Y" where only X is Y: Y是什么？ asks for X too


def sentences(text):
    """
    The text's sentences, stripped, each ending in 。！？ (a tail without one is no sentence), in one pass over
    the sentence ends: a pattern that must end in 。 and is retried from every position of a long tail without
    one takes time quadratic in the tail's length (minutes for a 60,000-character paragraph).
    """
    found, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > start:  # end marks with nothing before them close no sentence
            sentence = text[start:m.end()].strip()
            if sentence:
                found.append(sentence)
        start = m.end()
    return found


# An encyclopedia entry ("王家坝\n\n王家坝是安徽省阜南县的一个行蓄洪区，位于……。") names its subject in its title,
# and its opening sentence defines that subject: every clause of that sentence that opens with a verb (是, 位于,
# 简称, 成立于 ...) says it of the title's subject, so those clauses are read without guessing their subject
_TITLE_NOTE = re.compile(r'\s*[（(][^（）()]*[）)]\s*$')  # 水星 (行星): the note that tells two entries apart
_ENTRY_SPLIT = re.compile('[，,；;：:]')
_ENTRY_VERB = re.compile(  # what may follow the title's subject directly: 黄山位于…, 淝水之战发生于383年
    r'(?:是|为|即|位于|地处|坐落|总部|(?:成立|建立|创立|创办|创建|始建|建成|创刊|发生|出生|生)于|又称|简称|又名)')
_DEFINED = re.compile(r'(?:原|曾|也|又|则|乃|就|便|都|正)?(?P<v>是指|是|即|为(?![了何此主止首])|指(?![出导挥示责定望]))(?P<y>.+)')
_NAMED = re.compile(r'(?P<v>简称|又称|又名|亦称|通称|统称|原名|本名|全名|别称|别名|俗称|古称|旧称|全称|世称|笔名|艺名|字|号|又号|'
                    r'别号|自号|小字|名)(?P<y>.+)')
_PRAISED = re.compile(r'被(?:后人|后世|世人|人们)?(?P<v>誉为|称为|称作|尊为)(?P<y>.+)')
_LOCATED = re.compile(r'(?P<v>总部)?(?:位于|地处|坐落于|坐落在)(?P<y>.+)')
_SINCE = re.compile(f'(?P<v>成立|建立|创立|创办|创建|始建|建成|创刊|发生|出生|生)于(?P<y>{_DATE})')
_DATED_ENTRY = re.compile(f'(?P<y>{_DATE})(?:在[^，]{{2,16}})?(?P<v>成立|创立|创办|创刊|建成|落成|开馆|开播|开始试播)')
_PERSON_END = ('人', '家', '者', '员', '师', '士', '手', '帝', '王', '相', '将', '官', '君主', '公主')
ENTRY_ANSWER_CHARS = 40  # the longest answer from an entry: a definition may run on past a comma, up to this


def entry_title(raw):
    """
    The title of an encyclopedia-shaped text, "<title>\n\n<body>" (a short first line without 。 and a blank
    line: the head corpus.clean_article drops), or ''.
    """
    head, sep, rest = raw.strip().partition('\n\n')
    head = head.strip()
    if not sep or not rest.strip() or '\n' in head or not 1 <= len(head) <= 30 or re.search('[。！？，]', head):
        return ''
    return head


def _alias_end(text):
    """Where a parenthesis opening the text closes (李白（701年－762年）, X（英语：Y（Z））), or 0."""
    depth = 0
    for i, c in enumerate(text):
        depth += (c in '（(') - (c in '）)')
        if depth <= 0:
            return i + 1 if i else 0
    return 0


def entry_subject(title, text):
    """
    (the subject as the text writes it, the rest of its opening sentence) when the text opens with the title's
    subject, else None. The alias after the subject is skipped first: 司马迁（前145年－？） holds a ？ that ends no
    sentence.
    """
    core = _TITLE_NOTE.sub('', title).strip()
    if not core or not text:
        return None
    cut = re.search(r'[（(，,；;：:。！？]|是', text)
    head = text[:cut.start()] if cut else ''
    alias = _alias_end(text[len(head):])  # 李白（701年－762年）, 西湖（West Lake）: skipped
    after = text[len(head):][alias:]
    names = head.strip('《》') == core or head.startswith(core) and len(head) - len(core) <= 6 \
        or head.endswith(core) and len(head) - len(core) <= 3 or core in text[len(head):len(head) + alias]
    if head and names and not re.search(r'[\d０-９]', head[len(core):] if head.startswith(core) else head):
        found = sentences(after)
        return (head, found[0]) if found and after.startswith(found[0][:1]) else None
    found = sentences(text)
    if found and found[0].startswith(core) and _ENTRY_VERB.match(found[0], len(core)):  # 黄山位于…, 淝水之战发生于…
        return core, found[0][len(core):]
    return None


def _entry_answer(y, clauses, k, least=2, most=ENTRY_ANSWER_CHARS):
    """The answer a clause's predicate gives: quotes around the whole of it dropped, or None when it is no answer."""
    y = y.strip()
    verb = '的' not in y and re.search('[于在把将]', y)  # 是指起始于古代中国，…的路线: a verb phrase, not the noun
    if '的' not in y and (verb or y[-1:] not in _NOUN_END):  # 是植物…利用光能，…的过程: the phrase goes on
        for j in range(k + 1, len(clauses)):
            if _ENTRY_VERB.match(clauses[j]) or _NAMED.match(clauses[j]):  # 即农历新年，是…: the next one says more
                break
            if '的' in clauses[j] or clauses[j][-1:] in _NOUN_END:  # …的古代陆上商业贸易路线: the noun phrase ends
                y, verb = '，'.join([y, *clauses[k + 1:j + 1]]), False
                break
    if verb:
        return None
    if len(y) >= 2 and y[0] == '“' and y[-1] == '”' and y.count('“') == 1:
        y = y[1:-1]
    if not least <= len(y) <= most or not _balanced(y) or _ASKING.search(y) or _PRONOUN.search(y) \
            or y.endswith('的') or y.startswith(_Y_BAD_START):
        return None
    return y


def entry_candidates(title, text):
    """Pairs about an entry's subject from the first sentence of its body, the definition first."""
    subject = entry_subject(title, text)
    if not subject:
        return
    x, rest = subject
    clauses = [c.strip() for c in _ENTRY_SPLIT.split(_SENTENCE_END.sub('', rest))]
    defined = False
    for k, clause in enumerate(clauses):
        m = _DEFINED.fullmatch(clause)
        if m and not defined and not clause.startswith('为了'):
            y = _entry_answer(m['y'], clauses, k)
            if y:
                person = y.endswith(_PERSON_END) and not y.endswith(('国家', '人家', '老家'))
                defined = True
                yield {'question': f"{x}是{'谁' if person else '什么'}？", 'answer': y}
            continue
        m = _NAMED.fullmatch(clause)
        if m:
            short = m['v'] in ('字', '号', '自号', '小字', '名')  # 字太白: a name of a few characters, nothing else
            y = _entry_answer(m['y'], [], k, least=1, most=4 if short else 20)
            if y and not (short and not re.fullmatch('[\u4e00-\u9fff]+', y)):
                yield {'question': f"{x}{m['v']}什么？", 'answer': y}
            continue
        for pattern, question in ((_PRAISED, '{x}被{v}什么？'), (_LOCATED, '{x}{v}位于哪里？'),
                                  (_SINCE, '{x}{v}于何时？'), (_DATED_ENTRY, '{x}于何时{v}？')):
            m = pattern.fullmatch(clause) if pattern is not _SINCE else pattern.match(clause)
            y = m and _entry_answer(m['y'], [], k, least=2, most=20 if pattern is _LOCATED else 16)
            if y:
                yield {'question': question.format(x=x, v=m['v'] or ''), 'answer': y}
                break
        else:  # 杜甫（712年－770年），字子美，唐代伟大的现实主义诗人: an apposition, in a person's entry
            if not defined and k > 0 and (re.search('[的、]', clause) or len(clause) >= 5) \
                    and clause.endswith(('家', '诗人', '学者')) \
                    and not re.search('[于在了着是被有]', clause):
                y = _entry_answer(clause, [], k)
                if y:
                    defined = True
                    yield {'question': f'{x}是谁？', 'answer': y}


def _balanced(text):
    return all(text.count(a) == text.count(b) for a, b in ('《》', '“”', '（）', '()', '『』', '「」'))


def person(name, foreign=True):
    """A name: 李鹏, 吴邦国, 川·立派, or (foreign=True: right after a title) 克林顿; not 韩国 or 黄河."""
    if '·' in name:
        return name[0] != '·' != name[-1]
    return (len(name) == 3 and name[-1] not in '省市县州镇乡村区' or len(name) == 2 and name[-1] not in
            '国省市县州镇乡村区岛山河江湖海港湾东南西北') \
        and name[0] in _SURNAME or foreign and len(name) <= 5 and all(c in _FOREIGN for c in name)


def named(x):
    """A person, bare or titled: 李鹏, 国务院总理李鹏, 罗荣桓同志."""
    m = re.search(f'(?:{_ROLE}|同志|教授|先生|女士)(.{{2,3}})$', x)
    return person(x, foreign=False) or bool(m) and person(m[1]) or x.endswith(('同志', '先生', '女士', '教授', '老人'))


def subject_ok(x, ends=_NOUN_END):
    """A noun phrase a question can stand on: not a pronoun, adverb, verb, time word, number or bare generality."""
    return (len(x) >= 2 and not x.startswith(_X_BAD_START) and (x[-1] in ends or named(x)) and not _X_VERBISH.search(x)
            and not (x.endswith(_VAGUE_END) and '的' not in x) and _balanced(x) and not re.match(_D + '|[0-9０-９]', x))


def clause_pairs(name, m, question):
    """The pairs one rule's match gives: none, one, or two for "X是<the only Y>"."""
    g = m.groupdict(default='')
    x, y = g['x'], g['y']
    if not subject_ok(x, _QTY_END if name == 'amount' else _NOUN_END) or _ASKING.search(y) or _PRONOUN.search(y) \
            or name == 'amount' and not set(x) & _OWNER or name == 'won' and re.search(_DATE, y):
        return []
    if name in ('where', 'name', 'won', 'held', 'is'):
        if y.startswith(_Y_BAD_START) or y.endswith('的') or not _balanced(y) or re.search('[了着过]|\\d日|[０-９]日', y) \
                or name in ('won', 'held', 'is') and y[-1] not in _NOUN_END and not y.endswith('之一'):
            return []
        if y[0] == '“' and y[-1] == '”' and y.count('“') == 1:
            y = y[1:-1]
        if y[0] in '个座位名家所项件种条只张台支指' and len(y) > 3:  # 是座山城, 是指…: the classifier is no answer
            y = y[1:]
    if re.fullmatch('一.', y):  # 是一例
        return []
    who = '谁' if named(x) and y[-1] in '人者员家师士长手星官女' else '什么'  # a person by both sides: not 周围是谁？
    if len(x) == 2 and x[-1] not in _PLACE_END and (who == '什么' if name == 'is' else not named(x)):
        return []  # 人民, 市场, 产品: too general to ask about
    pairs = [{'question': question.format(who=who, **g), 'answer': y}]
    if name == 'is' and _UNIQUE.search(y) and not y.endswith('之一') and not g['m'] and len(x) <= 8:
        pairs.append({'question': f"{y}是{'谁' if named(x) else '什么'}？", 'answer': x})
    return pairs


def rules_candidates(text, next_sentence=False, title=''):
    """
    Pairs from the text itself, in reading order; title (an encyclopedia entry's, see entry_title): first the
    pairs about it from the opening sentence; next_sentence: last the sentence after each sentence.
    """
    if title:
        yield from entry_candidates(title, text)
    for sentence in sentences(text):
        if '？' in sentence or '?' in sentence:
            continue
        clauses = [_LEAD.sub('', c.strip()) for c in _CLAUSE.findall(sentence)]
        for k, clause in enumerate(clauses):
            dated, event = _DATED.fullmatch(clause), clauses[-1]
            if dated:  # "１９７２年，罗布泊湖水完全干涸。": only the sentence's last clause is sure to be a whole event
                if k + 2 == len(clauses) and 6 <= len(event) <= 28 and subject_ok(event[:2] + '国') \
                        and '（' not in event and not _X_VERBISH.search(event) \
                        and not re.search('将|要|会|应|[时后前中的际]$', event) \
                        and not ('的' in event and event[-1] in _NOUN_END):  # 由X率领的机组: a noun, not an event
                    yield {'question': f'{event}是在什么时候？', 'answer': dated['y']}
                continue
            for name, rule, question in RULES:
                m = rule.fullmatch(clause)
                pairs = clause_pairs(name, m, question) if m else []
                yield from pairs
                if pairs:
                    break
        for m in _TITLED.finditer(sentence):
            if subject_ok(m['x'], m['x'][-1]) and person(m['y']) and m['o'][-1] in _OWNER | {'家', '央'} \
                    and not re.search('[副的和与及]|^[省市县区乡镇村厂校院局部]|^(?:政府|党委|公司|集团|协会|俱乐部)$', m['o']):
                yield {'question': f"{m['x']}是谁？", 'answer': m['y']}  # 副: deputies are many
    if next_sentence:
        found = sentences(text)
        for first, following in zip(found, found[1:]):
            if _balanced(first) and _balanced(following):
                yield {'question': f'“{first.rstrip("。！？")}”的下一句是什么？', 'answer': following}


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit('usage: python sft/rules.py "<Chinese text>"')
    title = entry_title(sys.argv[1])
    found = list(rules_candidates(sys.argv[1].strip().partition('\n\n')[2] if title else sys.argv[1], title=title))
    for pair in found:
        print(json.dumps(pair, ensure_ascii=False))
    if not found:  # the rules ask only where they are sure of the subject, so silence is common
        print('no pairs: no clause states a fact in a form the rules know', file=sys.stderr)
