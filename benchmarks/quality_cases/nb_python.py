"""Plain Python notebooks: string methods, comprehensions, open ``for`` blocks, function and method
bodies; a user class whose attributes and keyword parameters are defined in another cell; a
namespace object whose attribute names are generated."""

from __future__ import annotations

from . import Case, Notebook, md

__all__ = ["NOTEBOOKS"]

TEXT = Notebook(
    id="text",
    title="# Tidying strings",
    setup=(
        'title = "  The Quick Brown Fox  "\nsentence = "the cat sat on the mat with the hat"\nraw_names = [" alice", "BOB ", "  carol  "]',
    ),
    cases=(
        Case(intent="URL slug of the title", prefix="slug = title.strip().lower().", reference="replace(' ', '-')",
             check="slug == 'the-quick-brown-fox'"),
        Case(intent="The words of the sentence", prefix="words = sentence.", reference="split()",
             check="words == sentence.split()"),
        Case(intent="How often 'the' occurs", prefix="n_the = sentence.", reference="count('the')", check="n_the == 3"),
        Case(intent="Tidy names", prefix="names = [n.", suffix=" for n in raw_names]", reference="strip().title()",
             check="names == ['Alice', 'Bob', 'Carol']"),
        Case(intent="Length of each word", prefix="lengths = {w: len(w) for w in ", reference="sentence.split()}",
             check="lengths == {w: len(w) for w in sentence.split()}"),
        Case(intent="Longest word", prefix="longest = max(sentence.split(), key=", reference="len)",
             check="longest == 'with'"),
        Case(intent="Every word capitalised", prefix="print(sentence.", reference="title())",
             check="_stdout.strip() == 'The Cat Sat On The Mat With The Hat'"),
        Case(intent="The names in one line, separated by commas", prefix="listing = ', '.",
             reference="join(n.strip() for n in raw_names)", check="listing.replace(' ', '').lower() == 'alice,bob,carol'"),
        Case(intent="Distinct words, sorted", prefix="vocab = sorted(", reference="set(sentence.split()))",
             check="vocab == sorted(set(sentence.split()))"),
    ),
)

NUMBERS = Notebook(
    id="numbers",
    title="# Small lists",
    setup=('nums = [3, 8, 15, 4, 23, 42, 16]\npairs = [("ant", 6), ("bee", 2), ("cow", 4)]',),
    cases=(
        Case(intent="Squares", prefix="squares = [x ** 2 for x in ", reference="nums]", check="squares == [x * x for x in nums]"),
        Case(intent="Even numbers", prefix="evens = [n for n in nums if ", reference="n % 2 == 0]",
             check="evens == [8, 4, 42, 16]"),
        Case(intent="The pairs as a dict", prefix="lookup = ", reference="dict(pairs)",
             check="lookup == {'ant': 6, 'bee': 2, 'cow': 4}"),
        Case(intent="Sum of the odd numbers", prefix="odd_total = 0\nfor n in nums:\n    if n % 2:\n        odd_total ",
             reference="+= n", check="odd_total == 41"),
        Case(intent="Each number with its position", prefix="for i, n in ", suffix=":\n    print(i, n)",
             reference="enumerate(nums)", check="_stdout.splitlines()[0] == '0 3' and len(_stdout.splitlines()) == 7"),
        Case(intent="Keys and values swapped", prefix="swapped = {v: k for k, v in ", reference="pairs}",
             check="swapped == {6: 'ant', 2: 'bee', 4: 'cow'}"),
        Case(intent="Largest number", prefix="biggest = ", reference="max(nums)", check="biggest == 42"),
        Case(intent="Numbers in ascending order", prefix="ordered = sorted(", reference="nums)", check="ordered == sorted(nums)"),
        Case(intent="Running maximum", prefix="best = []\nfor n in nums:\n    best.append(", reference="max(best[-1], n) if best else n)",
             check="best == [3, 8, 15, 15, 23, 42, 42]"),
        Case(intent="Average", prefix="mean = sum(nums) / ", reference="len(nums)", check="_same(mean, 111 / 7)"),
    ),
)

INVOICES = Notebook(
    id="invoices",
    title="# Billing",
    setup=(
        "class Invoice:\n    def __init__(self, client, lines, vat_rate=0.2):\n        self.client = client\n"
        "        self.lines = lines  # (description, amount) pairs\n        self.vat_rate = vat_rate\n\n"
        "    def net_total(self):\n        return sum(amount for _, amount in self.lines)\n\n"
        "    def gross_total(self):\n        return self.net_total() * (1 + self.vat_rate)",
        md("This month"),
        'inv = Invoice("acme", [("design", 1200.0), ("hosting", 300.0)])\nbook = [inv, Invoice("globex", [("audit", 800.0)], vat_rate=0.1)]',
    ),
    cases=(
        Case(intent="Amount due with VAT", prefix="due = inv.", reference="gross_total()", check="_same(due, 1800.0)",
             live_state=True, needs="gross_total"),
        Case(intent="VAT rate of this invoice", prefix="rate = inv.", reference="vat_rate", check="rate == 0.2",
             live_state=True, needs="vat_rate"),
        Case(intent="Number of lines", prefix="n_lines = len(inv.", reference="lines)", check="n_lines == 2",
             live_state=True, needs="lines"),
        Case(intent="Net revenue over the book", prefix="revenue = sum(i.", suffix=" for i in book)", reference="net_total()",
             check="_same(revenue, 2300.0)", live_state=True, needs="net_total"),
        Case(intent="Clients", prefix="clients = [i.", suffix=" for i in book]", reference="client",
             check="clients == ['acme', 'globex']", live_state=True, needs="client"),
        Case(intent="An invoice at a 5% rate", prefix="small = Invoice('initech', [('fix', 50.0)], ", reference="vat_rate=0.05)",
             check="_same(small.gross_total(), 52.5)", live_state=True, needs="vat_rate="),
        Case(intent="10% off the gross total",
             prefix="class Discounted(Invoice):\n    def gross_total(self):\n        return super().gross_total() * ",
             reference="0.9", suffix="\n\n\nd = Discounted('acme', [('design', 100.0)])\ntotal = d.gross_total()",
             check="_same(total, 108.0)"),
    ),
)

FUNCTIONS = Notebook(
    id="functions",
    title="# Shopping helpers",
    setup=(
        'cart = [\n    {"item": "pen", "price": 1.5, "qty": 4},\n    {"item": "book", "price": 12.0, "qty": 1},\n'
        '    {"item": "bag", "price": 25.0, "qty": 2},\n]\ntemps_c = [12.5, 18.0, 21.5, 9.0]',
    ),
    cases=(
        Case(prefix="def cart_total(items):\n    return sum(", reference="item['price'] * item['qty'] for item in items)",
             suffix="\n\n\ntotal = cart_total(cart)", check="_same(total, 68.0)"),
        Case(prefix="def to_fahrenheit(c):\n    return ", reference="c * 9 / 5 + 32",
             suffix="\n\n\nconverted = [to_fahrenheit(t) for t in temps_c]",
             check="all(abs(a - b) < 1e-9 for a, b in zip(converted, [54.5, 64.4, 70.7, 48.2]))"),
        Case(intent="Name of the priciest item", prefix="def most_expensive(items):\n    return max(items, key=lambda it: ",
             reference="it['price'])['item']", suffix="\n\n\nname = most_expensive(cart)", check="name == 'bag'"),
        Case(prefix="def count_items(items):\n    n = 0\n    for it in items:\n        n += ", reference="it['qty']",
             suffix="\n    return n\n\n\nn_items = count_items(cart)", check="n_items == 7"),
        Case(prefix="def cheap(items, limit=5):\n    return [it['item'] for it in items if ", reference="it['price'] < limit]",
             suffix="\n\n\nfew = cheap(cart)", check="few == ['pen']"),
        Case(intent="Warmest temperature", prefix="def warmest(temps):\n    ", reference="return max(temps)",
             suffix="\n\n\nw = warmest(temps_c)", check="w == 21.5"),
    ),
)

EARNINGS = Notebook(
    id="earnings",
    title="# Quarterly figures",
    setup=(
        'from types import SimpleNamespace\n\nquarters = ["q1", "q2", "q3", "q4"]\n'
        'earnings = SimpleNamespace(**{f"{q}_revenue": 100 + 25 * i for i, q in enumerate(quarters)})',
    ),
    cases=(
        Case(intent="Revenue of the third quarter", prefix="third = earnings.", reference="q3_revenue", check="third == 150",
             live_state=True, needs="q3_revenue"),
        Case(intent="Growth from the first to the last quarter", prefix="growth = earnings.q4_revenue - earnings.",
             reference="q1_revenue", check="growth == 75", live_state=True, needs="q1_revenue"),
        Case(intent="The year's total", prefix="year = sum(vars(", reference="earnings).values())", check="year == 550"),
        Case(intent="Second quarter", prefix="print(earnings.", suffix=")", reference="q2_revenue",
             check="_stdout.strip() == '125'", live_state=True, needs="q2_revenue"),
    ),
)

NOTEBOOKS = [TEXT, NUMBERS, INVOICES, FUNCTIONS, EARNINGS]
