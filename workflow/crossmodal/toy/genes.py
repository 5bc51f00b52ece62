"""Gene names of the toy cohort: real HGNC symbols for the planted markers and the six
MCAT-like groups, synthetic ``TOYG0001``-style symbols for the rest."""
from __future__ import annotations

# markers: strongly expressed by one cell type only (the planted deconvolution signal)
MARKERS = {
    "tumour": "MKI67 TOP2A EPCAM KRT8 KRT18 CCNB1 BIRC5 CDK1 MYBL2 UBE2C TPX2 AURKA CENPF "
              "FOXM1 PTTG1 CDC20 RRM2 TYMS MCM2 E2F1",
    "lymphocyte": "PTPRC CD3E CD3D CD2 CD8A CD4 CD19 MS4A1 CD79A GZMB GZMA PRF1 NKG7 CCL5 IL7R "
                  "LCK ZAP70 CD247 SELL CXCR4",
    "connective": "COL1A1 COL1A2 COL3A1 DCN LUM FAP PDGFRB ACTA2 TAGLN VIM FN1 SPARC THY1 COL5A1 "
                  "COL6A3 POSTN MMP2 FBLN1 PDGFRA TWIST1",
    "necrotic": "CA9 VEGFA SLC2A1 LDHA PGK1 ADM BNIP3 NDRG1 ANGPTL4 HK2 ENO1 P4HA1 ERO1A EGLN3 "
                "DDIT4 MT1X HMOX1 ALDOA PFKFB3 HILPDA",
    "normal_epithelial": "CDH1 KRT5 KRT14 KRT19 SFTPC SFTPB NAPSA AGER SCGB1A1 MUC5B CLDN4 ELF3 "
                         "TJP1 OCLN CLDN7 KRT7 GPX3 AQP1 SLC34A2 CDH16",
}

# the six gene groups of PathGen (after MCAT): real members, then synthetic genes fill up
GROUPS = {
    "tumor_suppressor": "TP53 PTEN RB1 APC BRCA1 BRCA2 CDKN2A NF1 NF2 VHL WT1 SMAD4 STK11 ATM "
                        "CHEK2 MLH1 MSH2 MSH6 PMS2 BAP1 ARID1A KEAP1 FBXW7 TSC1 TSC2 PTCH1",
    "oncogene": "MYC KRAS NRAS HRAS BRAF PIK3CA EGFR ERBB2 MET ALK RET ROS1 CCND1 CDK4 MDM2 MYCN "
                "IDH1 IDH2 CTNNB1 JUN FOS BCL2 KIT ABL1 SRC",
    "protein_kinase": "AKT1 AKT2 MAPK1 MAPK3 MAP2K1 MTOR CDK2 CDK6 PLK1 AURKB CHEK1 WEE1 JAK1 JAK2 "
                      "PRKCA PRKACA GSK3B CSNK2A1 PAK1 ROCK1 LYN SYK BTK FYN",
    "cell_differentiation": "SOX2 SOX9 NANOG POU5F1 KLF4 GATA3 GATA6 CDX2 PAX8 OLIG2 GFAP NES "
                            "HNF1A HNF4A FOXA1 FOXA2 TP63 ASCL1 NEUROD1 HIF1A",
    "transcription_factor": "STAT3 STAT1 NFKB1 RELA E2F3 TCF7 ZEB1 ZEB2 SNAI1 SNAI2 ETS1 ELK1 "
                            "ATF4 CREB1 YY1 SP1 MAX EGR1 KLF5 RUNX1 RUNX2 NFE2L2",
    "cytokine_growth_factor": "IL6 IL1B TNF TGFB1 TGFB2 CXCL8 CXCL10 CCL2 IFNG IL10 IL2 CSF1 "
                              "CSF2 PDGFA PDGFB FGF2 EGF HGF IGF1 IGF2 VEGFC TGFA CXCL12 BMP2 BMP4",
}
GROUP_NAMES = list(GROUPS)


def gene_symbols(n_genes: int, marker_genes: int, cell_types: list[str]):
    """``(symbols, marker_of)``: ``n_genes`` unique symbols; markers first, ``marker_genes`` per cell type.

    ``marker_of[i]`` is the cell type gene ``i`` marks, or ``""``.
    """
    symbols: list[str] = []
    marker_of: list[str] = []
    seen: set[str] = set()
    synth = (f"TOYG{i:04d}" for i in range(1, 100000))
    for ct in cell_types:
        real = MARKERS[ct].split()
        for j in range(marker_genes):
            s = real[j] if j < len(real) else next(synth)
            symbols.append(s)
            marker_of.append(ct)
            seen.add(s)
    if len(symbols) > n_genes:
        raise ValueError(f"toy: n_genes={n_genes} is smaller than the "
                         f"{len(symbols)} marker genes ({marker_genes} per cell type)")
    pool = [g for grp in GROUPS.values() for g in grp.split() if g not in seen]
    for s in pool:
        if len(symbols) >= n_genes:
            break
        if s not in seen:
            symbols.append(s)
            marker_of.append("")
            seen.add(s)
    while len(symbols) < n_genes:
        s = next(synth)
        symbols.append(s)
        marker_of.append("")
    return symbols, marker_of


def real_group(symbol: str) -> str | None:
    for grp, members in GROUPS.items():
        if symbol in members.split():
            return grp
    return None
