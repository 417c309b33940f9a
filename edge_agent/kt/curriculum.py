"""The default curriculum: junior-secondary (grades 7-9) maths knowledge points with zh-CN and English names.

Used to build the default model package (skills file and item bank). Skill difficulty is a logit offset:
higher means harder for a student of average ability before any practice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Skill:
    id: str
    name_zh: str
    name_en: str
    difficulty: float


SKILLS: tuple[Skill, ...] = (
    Skill("m7-rational-numbers", "有理数的运算", "operations with rational numbers", -1.2),
    Skill("m7-absolute-value", "绝对值与相反数", "absolute value and opposites", -1.0),
    Skill("m7-algebraic-expr", "整式的加减", "adding and subtracting polynomials", -0.8),
    Skill("m7-linear-eq-1", "一元一次方程", "linear equations in one variable", -0.6),
    Skill("m7-angles", "角的度量与计算", "measuring and calculating angles", -0.7),
    Skill("m7-parallel-lines", "平行线的性质与判定", "properties of parallel lines", -0.4),
    Skill("m7-real-numbers", "实数与平方根", "real numbers and square roots", -0.3),
    Skill("m7-coordinates", "平面直角坐标系", "the Cartesian coordinate plane", -0.5),
    Skill("m7-linear-systems", "二元一次方程组", "systems of linear equations", 0.0),
    Skill("m7-inequalities", "一元一次不等式(组)", "linear inequalities", 0.1),
    Skill("m7-statistics", "数据的收集与整理", "collecting and organising data", -0.6),
    Skill("m8-congruent-triangles", "全等三角形", "congruent triangles", 0.2),
    Skill("m8-axial-symmetry", "轴对称与等腰三角形", "reflection symmetry and isosceles triangles", 0.1),
    Skill("m8-poly-multiplication", "整式的乘法与因式分解", "multiplying and factorising polynomials", 0.3),
    Skill("m8-fractions-alg", "分式的运算", "algebraic fractions", 0.4),
    Skill("m8-radicals", "二次根式", "quadratic radicals", 0.3),
    Skill("m8-pythagoras", "勾股定理", "the Pythagorean theorem", 0.0),
    Skill("m8-parallelograms", "平行四边形", "parallelograms", 0.2),
    Skill("m8-linear-functions", "一次函数", "linear functions", 0.4),
    Skill("m8-data-analysis", "数据的分析", "averages and spread of data", -0.2),
    Skill("m9-quadratic-eq", "一元二次方程", "quadratic equations", 0.5),
    Skill(
        "m9-quadratic-functions", "二次函数的图像与性质", "graphs and properties of quadratic functions", 0.8
    ),
    Skill("m9-quadratic-transform", "二次函数图像变换", "transformations of quadratic graphs", 1.0),
    Skill("m9-rotation", "旋转", "rotations", 0.4),
    Skill("m9-circles", "圆的性质", "properties of circles", 0.7),
    Skill("m9-probability", "概率初步", "introduction to probability", 0.1),
    Skill("m9-inverse-proportion", "反比例函数", "inverse proportion functions", 0.6),
    Skill("m9-similar-triangles", "相似三角形", "similar triangles", 0.8),
    Skill("m9-trigonometry", "锐角三角函数", "trigonometric ratios of acute angles", 0.9),
    Skill("m9-projections", "投影与视图", "projections and views", 0.2),
)

ITEM_KINDS = (
    ("基础练习", "basic practice"),
    ("变式训练", "varied practice"),
    ("综合应用", "applied problem"),
    ("易错辨析", "common mistakes"),
    ("拓展提高", "extension"),
    ("课堂检测", "quick check"),
)
