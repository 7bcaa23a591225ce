# dbkit (the template's): `copier update` brings each release's changes here.
