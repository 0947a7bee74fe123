"""Naming a matrix's genes by their Entrez ids: the Hugo symbols that the study's own files pair with them.

cBioPortal's copy-number and expression matrices name each gene by ``Hugo_Symbol``, ``Entrez_Gene_Id`` or both
(File-Formats: "One or both of"; its expression section recommends the Entrez id alone). Where a line has both, the
Entrez id identifies the gene and a symbol that disagrees with it is ignored, and a second line of one Entrez id is
ignored (cBioPortal's importer, validateData.py ``checkGeneIdentification`` and ``FeaturewiseFileValidator``); an
Entrez id of 0 or a blank one names no gene (its MAF check reads both as missing). tumorboard names features by Hugo
symbol, as the mutations' ``gene_status`` and the gene panel do, and ships no gene table: an Entrez id is named by the
study's files that carry both columns (its MAF, the other matrix). An id they pair with two symbols, or whose symbol
they pair with a second id, stays unnamed: which pairing is right, no file of the study tells.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from ingest.cbioportal.tsv import DataLines, StudyError
from ingest.tables import MISSING

UNNAMED = "ENTREZ_{}"  # an expression gene that no file of the study names, e.g. ENTREZ_1956
NO_GENE = "no gene: the Entrez_Gene_Id is blank, 0 or not a whole number, and the file has no Hugo_Symbol column"


def entrez_id(cell: str | None) -> int | None:
    """The Entrez id in ``cell``, a positive integer; None for a blank cell, ``NA``, 0 or anything else."""
    try:
        number = int(cell) if cell is not None and cell.strip() not in MISSING else 0
    except ValueError:
        return None
    return number if number > 0 else None


class StudyGenes:
    """Entrez id -> Hugo symbol, as the study's files that carry both columns pair them (read on first use), and
    what each matrix of Entrez ids only could not name.

    Args:
        sources: the study's mutation files and matrices; those without both columns, or that cannot be read as
            text (a gzipped MAF), name nothing.
    """

    def __init__(self, sources: Iterable[Path]) -> None:
        self._sources = list(dict.fromkeys(sources))
        self._symbols: dict[int, str] | None = None
        self.named_by: list[Path] = []  # the sources that had both columns
        self.ambiguous: set[int] = set()  # ids paired with two symbols, or sharing a symbol with another id
        self.unnamed: dict[Path, tuple[list[int], int, str]] = {}  # matrix -> (its ids not named, how many ids
        # it names genes by, what became of the unnamed genes)

    def symbol(self, entrez: int) -> str | None:
        """The Hugo symbol the study's files pair with ``entrez``, or None."""
        return self.symbols().get(entrez)

    def symbols(self) -> dict[int, str]:
        """Entrez id -> Hugo symbol, one to one (the ambiguous ids left out)."""
        if self._symbols is None:
            self._symbols = self._read()
        return self._symbols

    def _read(self) -> dict[int, str]:
        by_id: defaultdict[int, set[str]] = defaultdict(set)
        for path in self._sources:
            found = set()
            try:
                with DataLines(path) as data:
                    if not {"Hugo_Symbol", "Entrez_Gene_Id"} <= set(data.header):
                        continue
                    at = (data.header.index("Hugo_Symbol"), data.header.index("Entrez_Gene_Id"))
                    for _, text in data.lines():
                        cells = text.split("\t", max(at) + 1)
                        if len(cells) > max(at):
                            symbol, entrez = cells[at[0]].strip(), entrez_id(cells[at[1]])
                            if entrez is not None and symbol not in MISSING and symbol != "Unknown":  # MAF: no gene
                                found.add((entrez, symbol))
            except StudyError:  # not text (a gzipped MAF), or a broken header: its own reading says so
                continue
            self.named_by.append(path)
            for entrez, symbol in found:
                by_id[entrez].add(symbol)
        by_symbol: defaultdict[str, set[int]] = defaultdict(set)
        for entrez, symbols in by_id.items():
            for symbol in symbols:
                by_symbol[symbol].add(entrez)
        pairs = {}
        for entrez, symbols in by_id.items():
            symbol = next(iter(symbols))
            if len(symbols) == 1 and len(by_symbol[symbol]) == 1:
                pairs[entrez] = symbol
            else:
                self.ambiguous.add(entrez)
        return pairs

    def notes(self) -> list[str]:
        """What the matrices of Entrez ids only could not name, each with the fix."""
        sources = ", ".join(p.name for p in self.named_by) or "none that could be read has both columns"
        notes = []
        for path, (unnamed, of, fate) in self.unnamed.items():
            if unnamed:
                ambiguous = sorted(self.ambiguous.intersection(unnamed))
                notes.append(f"{path.name}: {len(unnamed)} of {of} genes named only by Entrez_Gene_Id"
                             f" {'is' if len(unnamed) == 1 else 'are'} not named in the study's files ({sources})"
                             + (f"; {len(ambiguous)} of them because those files pair the id with two symbols or"
                                f" its symbol with a second id (Entrez_Gene_Id {', '.join(map(str, ambiguous[:10]))}"
                                f"{', ...' if len(ambiguous) > 10 else ''})" if ambiguous else "")
                             + f": {fate}; add a Hugo_Symbol column to {path.name} to name them")
        return notes
